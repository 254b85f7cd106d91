package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// JoinUser is the user name of the generic node join token. It is not a
// "system:node:<name>" user: the token is shared by every agent, so the
// authorizer lets it write any Node and node Lease (see NodeAuthorizer).
const JoinUser = "system:nodes:join"

// TokenEntry is one line of a token file: token,user,uid,"group1,group2".
type TokenEntry struct {
	Token  string
	User   string
	UID    string
	Groups []string
}

// ParseTokenFile parses a token file in kube-apiserver's --token-auth-file
// format: CSV records of token, user name, user uid and an optional
// comma-separated group list. Records with an empty token are skipped, as
// upstream does. Like upstream, there is no comment syntax.
func ParseTokenFile(r io.Reader) ([]TokenEntry, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	var out []TokenEntry
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("auth: token file: %w", err)
		}
		if len(rec) < 3 {
			line, _ := cr.FieldPos(0)
			return nil, fmt.Errorf("auth: token file line %d: need at least 3 columns (token, user name, user uid), found %d", line, len(rec))
		}
		if rec[0] == "" {
			continue
		}
		e := TokenEntry{Token: rec[0], User: rec[1], UID: rec[2]}
		if len(rec) >= 4 && rec[3] != "" {
			e.Groups = strings.Split(rec[3], ",")
		}
		out = append(out, e)
	}
}

// FormatTokenFile renders entries in the token file format.
func FormatTokenFile(entries []TokenEntry) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	for _, e := range entries {
		// Errors from csv.Writer only come from the underlying writer,
		// and a bytes.Buffer does not fail.
		_ = w.Write([]string{e.Token, e.User, e.UID, strings.Join(e.Groups, ",")})
	}
	w.Flush()
	return buf.Bytes()
}

// Tokens is the content of the server's token file and the two tokens the
// server itself hands out.
type Tokens struct {
	Entries []TokenEntry
	// Admin authenticates as user "admin" in group system:masters.
	Admin string
	// Join is the node join token: user JoinUser in group system:nodes.
	Join string
}

// EnsureTokenFile loads the token file at path, adding an admin token and a
// node join token when the file has none, and writes it back (mode 0600) if
// anything was added. Operators may add their own lines; they are kept.
func EnsureTokenFile(path string) (*Tokens, error) {
	var entries []TokenEntry
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if entries, err = ParseTokenFile(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, path)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("auth: read token file: %w", err)
	}

	t := &Tokens{}
	for _, e := range entries {
		switch {
		case t.Admin == "" && e.User == AdminUser && slices.Contains(e.Groups, GroupMasters):
			t.Admin = e.Token
		case t.Join == "" && e.User == JoinUser && slices.Contains(e.Groups, GroupNodes):
			t.Join = e.Token
		}
	}
	changed := false
	if t.Admin == "" {
		tok, err := NewToken()
		if err != nil {
			return nil, err
		}
		entries = append(entries, TokenEntry{Token: tok, User: AdminUser, UID: AdminUser, Groups: []string{GroupMasters}})
		t.Admin, changed = tok, true
	}
	if t.Join == "" {
		tok, err := NewToken()
		if err != nil {
			return nil, err
		}
		entries = append(entries, TokenEntry{Token: tok, User: JoinUser, UID: JoinUser, Groups: []string{GroupNodes}})
		t.Join, changed = tok, true
	}
	if changed {
		if err := WriteFileAtomic(path, FormatTokenFile(entries), privateFileMode); err != nil {
			return nil, err
		}
	}
	t.Entries = entries
	return t, nil
}

// NewToken returns a random bearer token (32 hex digits, 128 bits).
func NewToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: random token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// tokenDigest is the map key for a token: looking up a digest instead of the
// token itself means map timing reveals nothing useful about valid tokens.
func tokenDigest(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

package auth

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseTokenFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []TokenEntry
		wantErr bool
	}{
		{
			name: "upstream format with quoted groups",
			in:   "tok1,alice,uid1,\"g1,g2\"\ntok2,bob,uid2\n",
			want: []TokenEntry{
				{Token: "tok1", User: "alice", UID: "uid1", Groups: []string{"g1", "g2"}},
				{Token: "tok2", User: "bob", UID: "uid2"},
			},
		},
		{
			name: "empty token skipped",
			in:   ",nobody,uid\ntok,carol,uid3,system:masters\n",
			want: []TokenEntry{{Token: "tok", User: "carol", UID: "uid3", Groups: []string{"system:masters"}}},
		},
		{
			name: "no comment syntax, as upstream",
			in:   "#tok,dave,uid4\n",
			want: []TokenEntry{{Token: "#tok", User: "dave", UID: "uid4"}},
		},
		{name: "too few columns", in: "tok,alice\n", wantErr: true},
		{name: "empty file", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokenFile(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFormatTokenFileRoundTrip(t *testing.T) {
	in := []TokenEntry{
		{Token: "a", User: "admin", UID: "admin", Groups: []string{"system:masters"}},
		{Token: "b", User: "system:nodes:join", UID: "join", Groups: []string{"system:nodes", "extra"}},
	}
	data := FormatTokenFile(in)
	if !strings.Contains(string(data), `"system:nodes,extra"`) {
		t.Errorf("groups not quoted as one column:\n%s", data)
	}
	out, err := ParseTokenFile(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
}

func TestEnsureTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.csv")
	t1, err := EnsureTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if t1.Admin == "" || t1.Join == "" || t1.Admin == t1.Join {
		t.Fatalf("tokens = %+v, want two distinct tokens", t1)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, want 0600", st.Mode().Perm())
	}

	// An operator adds a line; a restart keeps the tokens and the line.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("optok,system:node:n1,n1,system:nodes\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	t2, err := EnsureTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Admin != t1.Admin || t2.Join != t1.Join {
		t.Errorf("tokens changed across restarts: %+v -> %+v", t1, t2)
	}
	if len(t2.Entries) != 3 {
		t.Errorf("entries = %+v, want admin, join and the operator's line", t2.Entries)
	}

	a := NewTokenAuthenticator(t2.Entries)
	tests := []struct {
		token     string
		wantUser  string
		wantGroup string
	}{
		{t2.Admin, "admin", GroupMasters},
		{t2.Join, JoinUser, GroupNodes},
		{"optok", "system:node:n1", GroupNodes},
	}
	for _, tt := range tests {
		u, ok := a.users[tokenDigest(tt.token)]
		if !ok {
			t.Errorf("token for %s not loaded", tt.wantUser)
			continue
		}
		if u.Name != tt.wantUser || !reflect.DeepEqual(u.Groups, []string{tt.wantGroup, GroupAuthenticated}) {
			t.Errorf("token user = %+v, want %s in %s", u, tt.wantUser, tt.wantGroup)
		}
	}
}

// FuzzTokenFile checks that parsing never panics and that what parses
// survives a format/parse round trip (EnsureTokenFile rewrites the file).
func FuzzTokenFile(f *testing.F) {
	f.Add("tok1,alice,uid1,\"g1,g2\"\ntok2,bob,uid2\n")
	f.Add("\"a\"\"b\",u,uid,\"\"\n#x,y,z\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseTokenFile(strings.NewReader(in))
		if err != nil || strings.Contains(in, "\r") { // csv normalises \r\n
			return
		}
		again, err := ParseTokenFile(strings.NewReader(string(FormatTokenFile(entries))))
		if err != nil {
			t.Fatalf("formatted entries do not parse: %v", err)
		}
		if !reflect.DeepEqual(entries, again) {
			t.Fatalf("round trip changed entries:\n%+v\n%+v", entries, again)
		}
	})
}

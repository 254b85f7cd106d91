package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Groups and users that the authenticators add, as upstream does.
const (
	// GroupAuthenticated is added to every authenticated user.
	GroupAuthenticated = "system:authenticated"
	// GroupUnauthenticated is the group of the anonymous user.
	GroupUnauthenticated = "system:unauthenticated"
	// AnonymousUser is the user of requests without credentials to the
	// public paths (PublicPaths).
	AnonymousUser = "system:anonymous"
)

// PublicPaths may be requested without credentials: upstream's
// system:public-info-viewer role, bound to system:unauthenticated.
var PublicPaths = []string{"/healthz", "/livez", "/readyz", "/version", "/version/"}

// IsPublicPath reports whether path is one of PublicPaths.
func IsPublicPath(path string) bool {
	for _, p := range PublicPaths {
		if path == p {
			return true
		}
	}
	return false
}

// Anonymous returns the user given to requests without credentials.
func Anonymous() *User {
	return &User{Name: AnonymousUser, Groups: []string{GroupUnauthenticated}}
}

// Authenticator finds the caller of an HTTP request.
type Authenticator interface {
	// AuthenticateRequest returns the caller. ok is false when the request
	// carries no credentials this authenticator understands; err is non-nil
	// when it carries credentials that are not valid.
	AuthenticateRequest(r *http.Request) (u *User, ok bool, err error)
}

// ErrInvalidToken is returned (wrapped) for an unknown bearer token.
var ErrInvalidToken = errors.New("auth: invalid bearer token")

// TokenAuthenticator authenticates "Authorization: Bearer <token>" against a
// fixed set of tokens (a token file).
type TokenAuthenticator struct {
	users map[[32]byte]*User
}

// NewTokenAuthenticator returns an authenticator for entries. Every user also
// gets the group system:authenticated.
func NewTokenAuthenticator(entries []TokenEntry) *TokenAuthenticator {
	t := &TokenAuthenticator{users: make(map[[32]byte]*User, len(entries))}
	for _, e := range entries {
		if e.Token == "" {
			continue
		}
		t.users[tokenDigest(e.Token)] = &User{Name: e.User, Groups: withAuthenticated(e.Groups)}
	}
	return t
}

// AuthenticateRequest implements Authenticator.
func (t *TokenAuthenticator) AuthenticateRequest(r *http.Request) (*User, bool, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, false, nil
	}
	scheme, tok, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return nil, false, nil
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return nil, false, nil
	}
	u, ok := t.users[tokenDigest(tok)]
	if !ok {
		return nil, false, ErrInvalidToken
	}
	return copyUser(u), true, nil
}

// CertAuthenticator authenticates a TLS client certificate signed by one of
// roots: the certificate's CommonName is the user name and its Organizations
// are the groups (the upstream x509 authenticator's convention).
type CertAuthenticator struct {
	roots *x509.CertPool

	mu sync.Mutex // guards verified
	// verified remembers chains that verified, by SHA-256 of the presented
	// chain, until the time they must be checked again. Verifying a chain
	// costs an ECDSA signature check, which profiles showed to be as much
	// CPU as the whole create handler when paid on every request.
	verified map[[sha256.Size]byte]time.Time
}

// certCacheTTL bounds how long a verified chain is trusted without a new
// check (certificates are not revoked here, so this only bounds staleness);
// certCacheMax bounds the cache's size.
const (
	certCacheTTL = 5 * time.Minute
	certCacheMax = 4096
)

// NewCertAuthenticator returns an authenticator trusting roots.
func NewCertAuthenticator(roots *x509.CertPool) *CertAuthenticator {
	return &CertAuthenticator{roots: roots, verified: map[[sha256.Size]byte]time.Time{}}
}

// chainKey identifies a presented certificate chain.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// verify checks the chain, or finds a recent successful check of it.
func (c *CertAuthenticator) verify(certs []*x509.Certificate) error {
	now := time.Now()
	key := chainKey(certs)
	c.mu.Lock()
	until, ok := c.verified[key]
	c.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	leaf := certs[0]
	opts := x509.VerifyOptions{
		Roots:         c.roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime:   now,
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return err
	}
	until = now.Add(certCacheTTL)
	if leaf.NotAfter.Before(until) {
		until = leaf.NotAfter
	}
	c.mu.Lock()
	if len(c.verified) >= certCacheMax {
		clear(c.verified)
	}
	c.verified[key] = until
	c.mu.Unlock()
	return nil
}

// AuthenticateRequest implements Authenticator. The TLS server may already
// have verified the chain (tls.VerifyClientCertIfGiven); verifying again here
// keeps the authenticator correct with any TLS client-auth mode.
func (c *CertAuthenticator) AuthenticateRequest(r *http.Request) (*User, bool, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, false, nil
	}
	leaf := r.TLS.PeerCertificates[0]
	if err := c.verify(r.TLS.PeerCertificates); err != nil {
		return nil, false, fmt.Errorf("auth: client certificate: %w", err)
	}
	if leaf.Subject.CommonName == "" {
		return nil, false, errors.New("auth: client certificate has no common name")
	}
	return &User{Name: leaf.Subject.CommonName, Groups: withAuthenticated(leaf.Subject.Organization)}, true, nil
}

// Union tries each authenticator in turn; the first that authenticates the
// request wins. If none does, the errors of those that rejected credentials
// are returned together (so a bad token still fails when no other
// credentials are present).
type Union []Authenticator

// AuthenticateRequest implements Authenticator.
func (u Union) AuthenticateRequest(r *http.Request) (*User, bool, error) {
	var errs []error
	for _, a := range u {
		user, ok, err := a.AuthenticateRequest(r)
		if ok {
			return user, true, nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return nil, false, errors.Join(errs...)
}

// Middleware authenticates every request before next sees it. An
// authenticated request carries its user in the context (UserFrom) and loses
// its Authorization header. A request without credentials may reach only
// PublicPaths, as the anonymous user; any other unauthenticated request, and
// any request with invalid credentials, gets 401 with an Unauthorized Status.
func Middleware(next http.Handler, a Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok, err := a.AuthenticateRequest(r)
		if !ok {
			if err == nil && IsPublicPath(r.URL.Path) {
				next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), Anonymous())))
				return
			}
			WriteUnauthorized(w)
			return
		}
		r.Header.Del("Authorization")
		next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
	})
}

// WriteUnauthorized writes kube-apiserver's 401 response.
func WriteUnauthorized(w http.ResponseWriter) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  "Unauthorized",
		Reason:   metav1.StatusReasonUnauthorized,
		Code:     http.StatusUnauthorized,
	}
	body, _ := json.Marshal(st) // a Status always marshals
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(append(body, '\n'))
}

func withAuthenticated(groups []string) []string {
	out := make([]string, 0, len(groups)+1)
	for _, g := range groups {
		if g != "" && g != GroupAuthenticated {
			out = append(out, g)
		}
	}
	return append(out, GroupAuthenticated)
}

func copyUser(u *User) *User {
	return &User{Name: u.Name, Groups: append([]string(nil), u.Groups...)}
}

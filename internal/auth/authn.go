package auth

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

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
}

// NewCertAuthenticator returns an authenticator trusting roots.
func NewCertAuthenticator(roots *x509.CertPool) *CertAuthenticator {
	return &CertAuthenticator{roots: roots}
}

// AuthenticateRequest implements Authenticator. The TLS server may already
// have verified the chain (tls.VerifyClientCertIfGiven); verifying again here
// keeps the authenticator correct with any TLS client-auth mode.
func (c *CertAuthenticator) AuthenticateRequest(r *http.Request) (*User, bool, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, false, nil
	}
	leaf := r.TLS.PeerCertificates[0]
	opts := x509.VerifyOptions{
		Roots:         c.roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, ic := range r.TLS.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := leaf.Verify(opts); err != nil {
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

package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tokenAuth is a token service plus a registry middleware implementing the
// Docker registry token flow: requests without a valid bearer token get a
// 401 challenge pointing at the token service, which authenticates users
// (HTTP basic on GET, OAuth password/refresh_token grants on POST).
type tokenAuth struct {
	users    map[string]string          // user -> password
	idTokens map[string]string          // identity token -> user
	canRead  map[string]map[string]bool // user -> repository -> allowed
	// denyAtToken makes the token service answer 403 for repositories the
	// user may not read; otherwise it issues a token and the registry
	// answers 403 DENIED.
	denyAtToken bool
	// anonymous makes the token service issue tokens without credentials, to the user
	// "anonymous" (canRead says what it may read), as Docker Hub does for public
	// repositories.
	anonymous bool

	realm string

	mu     sync.Mutex
	tokens map[string]string // token -> user
}

func (a *tokenAuth) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var user string
	switch r.Method {
	case http.MethodGet:
		if u, p, ok := r.BasicAuth(); ok {
			if pw, known := a.users[u]; !known || pw != p {
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
			user = u
		}
	case http.MethodPost:
		switch r.PostForm.Get("grant_type") {
		case "password":
			u, p := r.PostForm.Get("username"), r.PostForm.Get("password")
			if pw, known := a.users[u]; !known || pw != p {
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
			user = u
		case "refresh_token":
			u, ok := a.idTokens[r.PostForm.Get("refresh_token")]
			if !ok {
				http.Error(w, "bad refresh token", http.StatusUnauthorized)
				return
			}
			user = u
		default:
			http.Error(w, "unsupported grant", http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if user == "" && a.anonymous {
		user = "anonymous"
	}
	if user == "" {
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	for _, scope := range strings.Fields(strings.Join(r.Form["scope"], " ")) {
		parts := strings.Split(scope, ":")
		if len(parts) == 3 && parts[0] == "repository" && !a.canRead[user][parts[1]] && a.denyAtToken {
			http.Error(w, "access to "+parts[1]+" denied", http.StatusForbidden)
			return
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	a.mu.Lock()
	a.tokens[tok] = user
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

func (a *tokenAuth) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo := repoFromPath(r.URL.Path)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		user, ok := a.tokens[tok]
		a.mu.Unlock()
		if !ok {
			challenge := fmt.Sprintf(`Bearer realm=%q,service="test"`, a.realm)
			if repo != "" {
				challenge += fmt.Sprintf(`,scope="repository:%s:pull"`, repo)
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		if repo != "" && !a.canRead[user][repo] {
			writeRegistryError(w, http.StatusForbidden, "DENIED", "requested access to the resource is denied")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// repoFromPath extracts the repository from /v2/<repo>/{manifests,blobs}/...
func repoFromPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return ""
	}
	for _, kind := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, kind); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func newTokenAuth(t *testing.T, denyAtToken bool) *tokenAuth {
	t.Helper()
	a := &tokenAuth{
		users:    map[string]string{"alice": "secret", "bob": "hunter2"},
		idTokens: map[string]string{"alice-identity-token": "alice"},
		canRead: map[string]map[string]bool{
			"alice": {"app/multi": true, "app/single": true},
			"bob":   {"app/single": true},
		},
		denyAtToken: denyAtToken,
		tokens:      map[string]string{},
	}
	ts := httptest.NewServer(http.HandlerFunc(a.serveToken))
	t.Cleanup(ts.Close)
	a.realm = ts.URL + "/token"
	return a
}

func TestTokenAuth(t *testing.T) {
	type setup struct {
		auth *tokenAuth
		reg  *testRegistry
	}
	envs := map[bool]setup{}
	for _, denyAtToken := range []bool{false, true} {
		a := newTokenAuth(t, denyAtToken)
		reg := newTestRegistry(t, a.middleware)
		pushFixtures(t, reg)
		envs[denyAtToken] = setup{a, reg}
	}

	tests := []struct {
		name        string
		denyAtToken bool
		keyPrefix   string            // prefix of the auths key, e.g. "https://"
		entry       map[string]string // config.json auths entry; nil: no config.json
		creds       func(host string) (string, string, error)
		repo        string
		wantErr     error
	}{
		{name: "auth field", entry: map[string]string{"auth": basicAuth("alice", "secret")}, repo: "app/multi"},
		{name: "username and password fields", entry: map[string]string{"username": "alice", "password": "secret"}, repo: "app/multi"},
		{name: "identity token", entry: map[string]string{"username": "<token>", "identitytoken": "alice-identity-token"}, repo: "app/multi"},
		{name: "https key in config", keyPrefix: "https://", entry: map[string]string{"auth": basicAuth("bob", "hunter2")}, repo: "app/single"},
		{name: "WithCredentials", creds: func(string) (string, string, error) { return "alice", "secret", nil }, repo: "app/multi"},
		{name: "WithCredentials empty falls back to config", creds: func(string) (string, string, error) { return "", "", nil },
			entry: map[string]string{"auth": basicAuth("alice", "secret")}, repo: "app/multi"},
		{name: "no credentials", repo: "app/multi", wantErr: ErrUnauthorized},
		{name: "wrong password", entry: map[string]string{"auth": basicAuth("alice", "wrong")}, repo: "app/multi", wantErr: ErrUnauthorized},
		{name: "unknown identity token", entry: map[string]string{"identitytoken": "stolen"}, repo: "app/multi", wantErr: ErrUnauthorized},
		{name: "no access, registry answers 403", entry: map[string]string{"auth": basicAuth("bob", "hunter2")}, repo: "app/multi", wantErr: ErrDenied},
		{name: "no access, token service answers 403", denyAtToken: true, entry: map[string]string{"auth": basicAuth("bob", "hunter2")}, repo: "app/multi", wantErr: ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := envs[tt.denyAtToken]
			cfgDir := t.TempDir()
			if tt.entry != nil {
				cfgDir = writeDockerConfig(t, map[string]map[string]string{tt.keyPrefix + env.reg.Host: tt.entry})
			}
			c := testClient(t, env.reg, WithDockerConfig(cfgDir), WithCredentials(tt.creds))
			img, err := c.Resolve(context.Background(), env.reg.Host+"/"+tt.repo+":v1", ocispec.Platform{OS: "linux", Architecture: "amd64"})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				t.Logf("error: %v", err)
				checkErrdefs(t, err)
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			rc, err := c.OpenBlob(context.Background(), img.Host, img.Repository, img.Layers[0].Descriptor)
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			if _, err := readAllClose(t, rc); err != nil {
				t.Fatalf("read blob: %v", err)
			}
		})
	}
}

// checkErrdefs verifies the containerd error class matching a sentinel.
func checkErrdefs(t *testing.T, err error) {
	t.Helper()
	switch {
	case errors.Is(err, ErrUnauthorized) && !errdefs.IsUnauthorized(err),
		errors.Is(err, ErrDenied) && !errdefs.IsPermissionDenied(err),
		errors.Is(err, ErrNotFound) && !errdefs.IsNotFound(err):
		t.Errorf("error %v lacks its errdefs class", err)
	}
}

// A token service that fails temporarily is retried with a fresh authorizer
// (containerd's authorizer caches a failed token fetch).
func TestTokenServiceTemporaryFailure(t *testing.T) {
	a := newTokenAuth(t, false)
	var failures atomic.Int64
	failures.Store(2)
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		a.serveToken(w, r)
	}))
	t.Cleanup(tokenSrv.Close)
	a.realm = tokenSrv.URL + "/token"
	reg := newTestRegistry(t, a.middleware)
	pushFixtures(t, reg)

	cfg := writeDockerConfig(t, map[string]map[string]string{reg.Host: {"auth": basicAuth("alice", "secret")}})
	c := testClient(t, reg, WithDockerConfig(cfg))
	if err := resolveAndRead(t, c, reg.Host+"/app/multi:v1"); err != nil {
		t.Fatalf("resolve: %v", err)
	}
}

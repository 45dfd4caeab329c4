package containerdenv

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// TokenAuth guards a registry the way Docker Hub and most private registries do: a pull
// without a valid bearer token gets 401 with a challenge naming the registry's own token
// endpoint (/token), which issues tokens to one user's HTTP basic credentials.
type TokenAuth struct {
	User, Password string

	enabled atomic.Bool
	mu      sync.Mutex
	tokens  map[string]bool
	issued  atomic.Int64
	refused atomic.Int64
}

// Enable turns the guard on; until then the registry is open (to push test images).
func (a *TokenAuth) Enable() { a.enabled.Store(true) }

// Issued and Refused count the token requests granted and refused.
func (a *TokenAuth) Issued() int64  { return a.issued.Load() }
func (a *TokenAuth) Refused() int64 { return a.refused.Load() }

// DockerConfig writes a docker config.json with the user's credentials for hosts into a new
// directory under dir and returns that directory, for DOCKER_CONFIG.
func (a *TokenAuth) DockerConfig(dir string, hosts ...string) (string, error) {
	d, err := os.MkdirTemp(dir, "docker-config-")
	if err != nil {
		return "", err
	}
	auth := base64.StdEncoding.EncodeToString([]byte(a.User + ":" + a.Password))
	auths := map[string]any{}
	for _, h := range hosts {
		auths[h] = map[string]string{"auth": auth}
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return "", err
	}
	return d, os.WriteFile(filepath.Join(d, "config.json"), b, 0o600)
}

// StartTokenAuthRegistry serves a registry guarded by a TokenAuth for user:password on
// 127.0.0.1. The guard starts disabled: push, then Enable.
func StartTokenAuthRegistry(logw io.Writer, user, password string) (*Registry, *TokenAuth, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("registry listen: %w", err)
	}
	a := NewTokenAuth(user, password)
	host := ln.Addr().String()
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(logw, "registry: ", log.LstdFlags|log.Lmicroseconds)))
	r := &Registry{
		Host: host,
		srv:  &http.Server{Handler: a.Guard(inner, "http://"+host+"/token", func(*http.Request) bool { return true }), ReadHeaderTimeout: 30 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	return r, a, nil
}

// NewTokenAuth returns a guard, disabled, issuing tokens to user:password.
func NewTokenAuth(user, password string) *TokenAuth {
	return &TokenAuth{User: user, Password: password, tokens: map[string]bool{}}
}

// Guard returns next behind a: once enabled, a request that guarded picks needs a valid
// bearer token, which the token service at realm issues; Guard serves that service at
// /token itself.
func (a *TokenAuth) Guard(next http.Handler, realm string, guarded func(*http.Request) bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/token", a.serveToken)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if a.enabled.Load() && guarded(r) && !a.valid(r) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test-registry"`, realm))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
	return mux
}

func (a *TokenAuth) valid(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tokens[tok]
}

// serveToken issues a token for basic credentials (GET) or a password grant (POST form).
func (a *TokenAuth) serveToken(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err == nil && r.PostForm.Get("grant_type") == "password" {
			user, pass, ok = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		}
	}
	if !ok || user != a.User || pass != a.Password {
		a.refused.Add(1)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	b := make([]byte, 16)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	a.mu.Lock()
	a.tokens[tok] = true
	a.mu.Unlock()
	a.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

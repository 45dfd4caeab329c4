package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestAccess(t *testing.T) {
	open := newTestRegistry(t, nil)
	openFix := pushFixtures(t, open)
	guarded := newTokenAuth(t, false)
	guarded.anonymous = true
	guarded.canRead["anonymous"] = map[string]bool{"app/single": true}
	private := newTestRegistry(t, guarded.middleware)
	fix := pushFixtures(t, private)
	layerOf := func(f *fixture) digest.Digest {
		ls, err := f.Single.Layers()
		if err != nil {
			t.Fatal(err)
		}
		return digest.Digest(mustDigest(t, ls[0]))
	}
	blob, openBlob := layerOf(fix), layerOf(openFix)
	alice := writeDockerConfig(t, map[string]map[string]string{private.Host: {"auth": basicAuth("alice", "secret")}})
	bob := writeDockerConfig(t, map[string]map[string]string{private.Host: {"auth": basicAuth("bob", "hunter2")}})
	ctx := context.Background()

	tests := []struct {
		name        string
		reg         *testRegistry
		config      string // docker config directory; "" for none
		repo        string
		blob        digest.Digest
		wantPrivate bool
		wantErr     error
	}{
		{name: "registry without auth", reg: open, repo: "app/single", blob: openBlob},
		{name: "anonymous token reads it", reg: private, repo: "app/single", blob: blob},
		{name: "private, with credentials", reg: private, config: alice, repo: "app/multi", blob: blob, wantPrivate: true},
		{name: "private, without credentials", reg: private, repo: "app/multi", blob: blob, wantErr: ErrDenied}, // an anonymous token, refused
		{name: "private, credentials without access", reg: private, config: bob, repo: "app/multi", blob: blob, wantErr: ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{}
			if tt.config != "" {
				opts = append(opts, WithDockerConfig(tt.config))
			}
			c := testClient(t, tt.reg, opts...)
			before := time.Now()
			a, err := c.Access(ctx, tt.reg.Host, tt.repo, tt.blob)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Private != tt.wantPrivate {
				t.Fatalf("got private %v; want %v", a.Private, tt.wantPrivate)
			}
			if !tt.wantPrivate {
				if a.Authorization != "" {
					t.Errorf("a public repository came with a proof %q", a.Authorization)
				}
				return
			}
			if !strings.HasPrefix(a.Authorization, "Bearer ") {
				t.Fatalf("got proof %q; want a bearer token", a.Authorization)
			}
			if a.Expires.Before(before.Add(DefaultTokenLifetime)) || a.Expires.After(time.Now().Add(DefaultTokenLifetime)) {
				t.Errorf("token expires %v; want %v after it was obtained", a.Expires, DefaultTokenLifetime)
			}
			again, err := c.Access(ctx, tt.reg.Host, tt.repo, tt.blob)
			if err != nil || again != a {
				t.Errorf("second Access: %+v, %v; want the first answer, kept", again, err)
			}

			// Another party checks the proof with a client of its own, without credentials.
			checker := testClient(t, tt.reg)
			if err := checker.CheckAuthorization(ctx, tt.reg.Host, tt.repo, tt.blob, a.Authorization); err != nil {
				t.Errorf("the proof does not check: %v", err)
			}
			refusals := []struct {
				name, repo, auth string
				want             error
			}{
				{"a made-up token", tt.repo, "Bearer 0123456789abcdef", ErrUnauthorized},
				{"no token", tt.repo, "", ErrUnauthorized},
				{"basic credentials", tt.repo, "Basic " + basicAuth("alice", "secret"), ErrUnauthorized},
				{"the token for another repository", "app/dlist", a.Authorization, ErrDenied},
			}
			for _, r := range refusals {
				if err := checker.CheckAuthorization(ctx, tt.reg.Host, r.repo, tt.blob, r.auth); !errors.Is(err, r.want) {
					t.Errorf("%s: got %v; want %v", r.name, err, r.want)
				}
			}
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	jwt := func(payload string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return "Bearer " + enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(payload)) + ".sig"
	}
	tests := []struct {
		name, auth string
		want       time.Time
	}{
		{"JWT with exp", jwt(`{"exp":1800000300,"access":[]}`), time.Unix(1_800_000_300, 0)},
		{"JWT without exp", jwt(`{"sub":"alice"}`), now.Add(DefaultTokenLifetime)},
		{"opaque token", "Bearer 0123456789abcdef", now.Add(DefaultTokenLifetime)},
		{"three parts, not base64", "Bearer a.%%%.c", now.Add(DefaultTokenLifetime)},
	}
	for _, tt := range tests {
		if got := TokenExpiry(tt.auth, now); !got.Equal(tt.want) {
			t.Errorf("%s: got %v; want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzTokenExpiry: any Authorization value gives an expiry, never a panic.
func FuzzTokenExpiry(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJleHAiOjE4MDAwMDAzMDB9.sig")
	f.Add("Bearer 0123456789abcdef")
	f.Add("Basic YWxpY2U6c2VjcmV0")
	f.Add("Bearer a..")
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, auth string) {
		if got := TokenExpiry(auth, now); got.IsZero() {
			t.Errorf("TokenExpiry(%q) is zero", auth)
		}
	})
}

// TestAccessWhileTheRegistryIsDown: a registry that fails to answer is asked once, and its
// failure repeated for a while, rather than once per layer.
func TestAccessWhileTheRegistryIsDown(t *testing.T) {
	var hits atomic.Int64
	down := newTestRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		})
	})
	c := testClient(t, down)
	blob := digest.FromString("a layer")
	for range 3 {
		if _, err := c.Access(context.Background(), down.Host, "app/single", blob); err == nil {
			t.Fatal("a registry that is down answered")
		}
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("the registry was asked %d times; want once", got)
	}
}

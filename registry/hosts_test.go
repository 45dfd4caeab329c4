package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

func resolveAndRead(t *testing.T, c *Client, ref string) error {
	t.Helper()
	img, err := c.Resolve(context.Background(), ref, linuxAMD64)
	if err != nil {
		return err
	}
	rc, err := c.OpenBlob(context.Background(), img.Host, img.Repository, img.Layers[0].Descriptor)
	if err != nil {
		return err
	}
	_, err = readAllClose(t, rc)
	return err
}

func TestHostsTLS(t *testing.T) {
	reg := newTLSTestRegistry(t, nil)
	pushFixtures(t, reg)
	ca := writeServerCert(t, reg.Server)
	ref := reg.Host + "/app/multi:v1"

	tests := []struct {
		name      string
		hostsToml string // "" means no hosts dir
		opts      []Option
		wantTLS   bool
	}{
		{
			name:      "https with ca",
			hostsToml: fmt.Sprintf("server = %q\nca = %q\n", "https://"+reg.Host, ca),
		},
		{
			name:      "host section with ca",
			hostsToml: fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n", "https://"+reg.Host, "https://"+reg.Host, ca),
		},
		{
			name:      "skip_verify",
			hostsToml: fmt.Sprintf("server = %q\nskip_verify = true\n", "https://"+reg.Host),
		},
		{
			name:      "https without ca",
			hostsToml: fmt.Sprintf("server = %q\n", "https://"+reg.Host),
			wantTLS:   true,
		},
		{
			name:    "no configuration: https with system roots",
			wantTLS: true,
		},
		{
			name: "base HTTP client trusting the server",
			opts: []Option{WithHTTPClient(reg.Server.Client())},
		},
		{
			name:      "hosts.toml ca wins over base HTTP client",
			hostsToml: fmt.Sprintf("server = %q\nca = %q\n", "https://"+reg.Host, ca),
			opts:      []Option{WithHTTPClient(&http.Client{Transport: http.DefaultTransport})},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{WithDockerConfig(t.TempDir()), WithRetry(3, 5*time.Millisecond)}
			if tt.hostsToml != "" {
				dir := t.TempDir()
				writeHostsToml(t, dir, reg.Host, tt.hostsToml)
				opts = append(opts, WithHostsDir(dir))
			}
			c := New(append(opts, tt.opts...)...)
			start := time.Now()
			err := resolveAndRead(t, c, ref)
			if !tt.wantTLS {
				if err != nil {
					t.Fatalf("resolve: %v", err)
				}
				return
			}
			var uaErr x509.UnknownAuthorityError
			if !errors.As(err, &uaErr) || !strings.Contains(err.Error(), "TLS") {
				t.Fatalf("err = %v, want a TLS unknown-authority error", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("TLS failure took %v; it should not be retried", d)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestHostsPlainHTTP(t *testing.T) {
	reg := newTestRegistry(t, nil)
	pushFixtures(t, reg)
	ref := reg.Host + "/app/multi:v1"
	_, port, _ := strings.Cut(reg.Host, ":")

	tests := []struct {
		name      string
		hostsToml string
		insecure  []string
		wantTLS   bool
	}{
		{name: "hosts.toml server http", hostsToml: fmt.Sprintf("server = %q\n", "http://"+reg.Host)},
		{name: "hosts.toml host section http", hostsToml: fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg.Host)},
		{name: "insecure list", insecure: []string{reg.Host}},
		{name: "insecure list without port", insecure: []string{"127.0.0.1"}},
		{name: "insecure list with scheme", insecure: []string{"http://" + reg.Host}},
		{name: "other port insecure", insecure: []string{"127.0.0.1:1" + port}, wantTLS: true},
		{name: "default is https", wantTLS: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{WithDockerConfig(t.TempDir()), WithRetry(3, 5*time.Millisecond), WithInsecureRegistries(tt.insecure...)}
			if tt.hostsToml != "" {
				dir := t.TempDir()
				writeHostsToml(t, dir, reg.Host, tt.hostsToml)
				opts = append(opts, WithHostsDir(dir))
			}
			err := resolveAndRead(t, New(opts...), ref)
			if !tt.wantTLS {
				if err != nil {
					t.Fatalf("resolve: %v", err)
				}
				return
			}
			var te *tlsError
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want a TLS error", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

// hitCounter counts requests and records their ns query parameters.
type hitCounter struct {
	n      atomic.Int64
	mu     sync.Mutex
	ns     map[string]bool
	status int // when non-zero, answer every request with it
}

func (h *hitCounter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.n.Add(1)
		h.mu.Lock()
		if h.ns == nil {
			h.ns = map[string]bool{}
		}
		h.ns[r.URL.Query().Get("ns")] = true
		h.mu.Unlock()
		if h.status != 0 {
			writeRegistryError(w, h.status, "UNAVAILABLE", "mirror down")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestHostsMirror(t *testing.T) {
	tests := []struct {
		name         string
		mirrorStatus int
		wantMirror   bool // the mirror served the content
	}{
		{name: "mirror serves", wantMirror: true},
		{name: "mirror failing falls back to upstream", mirrorStatus: http.StatusInternalServerError},
		{name: "mirror 404 falls back to upstream", mirrorStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstreamHits := &hitCounter{}
			upstream := newTestRegistry(t, upstreamHits.middleware)
			f := newFixture(t)
			f.push(t, upstream)

			mirrorHits := &hitCounter{status: tt.mirrorStatus}
			mirror := newTestRegistry(t, mirrorHits.middleware)
			f.push(t, mirror)

			dir := t.TempDir()
			writeHostsToml(t, dir, upstream.Host, fmt.Sprintf(
				"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
				"http://"+upstream.Host, "http://"+mirror.Host))
			c := New(WithHostsDir(dir), WithDockerConfig(t.TempDir()), WithRetry(3, 5*time.Millisecond))
			if err := resolveAndRead(t, c, upstream.Host+"/app/multi:v1"); err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if mirrorHits.n.Load() == 0 {
				t.Error("mirror was not tried")
			}
			mirrorHits.mu.Lock()
			sawNS := mirrorHits.ns[upstream.Host]
			mirrorHits.mu.Unlock()
			if !sawNS {
				t.Errorf("mirror requests lacked ns=%s", upstream.Host)
			}
			if got := upstreamHits.n.Load(); tt.wantMirror && got != 0 {
				t.Errorf("upstream saw %d requests, want none", got)
			} else if !tt.wantMirror && got == 0 {
				t.Error("upstream was not used as fallback")
			}
		})
	}
}

// A hosts.toml that leaves the ref's host without a resolve-capable endpoint
// cannot resolve tags, but can still fetch by digest.
func TestHostsCapabilities(t *testing.T) {
	reg := newTestRegistry(t, nil)
	f := pushFixtures(t, reg)
	dir := t.TempDir()
	writeHostsToml(t, dir, reg.Host, fmt.Sprintf("server = %q\ncapabilities = [\"pull\"]\n", "http://"+reg.Host))
	c := New(WithHostsDir(dir), WithDockerConfig(t.TempDir()))
	if _, err := c.Resolve(context.Background(), reg.Host+"/app/multi:v1", linuxAMD64); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve tag: err = %v, want ErrNotFound", err)
	}
	if _, err := c.Resolve(context.Background(), reg.Host+"/app/multi@"+mustDigest(t, f.Index), linuxAMD64); err != nil {
		t.Errorf("resolve digest: %v", err)
	}
}

package mirror

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// upstream is a real registry that requires HTTP basic credentials user:pass.
func upstream(t *testing.T) string {
	return countingUpstream(t, nil)
}

// countingUpstream is upstream that also counts the body bytes it sends for GETs of blobs.
func countingUpstream(t *testing.T, blobBytes *atomic.Int64) string {
	t.Helper()
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pass" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		if blobBytes != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			w = &countingWriter{ResponseWriter: w, n: blobBytes}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushImage(t *testing.T, ref string) {
	t.Helper()
	img := empty.Image
	for i := range 3 {
		raw, err := layertest.Tar(layertest.Generated(uint64(i), 20<<10, 3))
		if err != nil {
			t.Fatal(err)
		}
		l, _ := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		img, _ = mutate.AppendLayers(img, l)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cfg)
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "user", Password: "pass"})); err != nil {
		t.Fatal(err)
	}
}

// TestPullThroughMirrorLearnsLayers pulls an image the way containerd does — containerd's
// hosts.toml mirror configuration and authorizer, through our registry client — and checks
// that the credentials challenge passed through, and that the mirror recorded every chain ID.
func TestPullThroughMirrorLearnsLayers(t *testing.T) {
	up := upstream(t)
	ref := up + "/team/app:v1"
	pushImage(t, ref)

	dir := t.TempDir()
	store, err := OpenStore(filepath.Join(dir, "chains.db"))
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan []seed.Source, 4)
	m := New(registry.New(registry.WithInsecureRegistries(up)), store,
		WithImageSeen(func(_ context.Context, layers []seed.Source) { seen <- layers }))
	containerd, rec, mirrorURL := containerdThrough(t, up, m)
	img, err := containerd.Resolve(context.Background(), ref, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	for _, u := range rec.seen() {
		if !strings.HasPrefix(u, mirrorURL) {
			t.Fatalf("request bypassed the mirror: %s", u)
		}
	}
	for _, l := range img.Layers {
		src, err := store.Get(l.ChainID)
		if err != nil {
			t.Fatalf("chain %s not learned: %v", l.ChainID, err)
		}
		if src.Host != up || src.Repository != "team/app" || src.Blob.Digest != l.Descriptor.Digest || src.DiffID != l.DiffID {
			t.Fatalf("chain %s: got %+v, want layer %s diffID %s", l.ChainID, src, l.Descriptor.Digest, l.DiffID)
		}
	}

	select {
	case layers := <-seen:
		if len(layers) != len(img.Layers) || layers[0].DiffID != img.Layers[0].DiffID {
			t.Fatalf("image seen with layers %+v", layers)
		}
	default:
		t.Fatal("the image-seen hook was not called")
	}

	// The record survives a restart.
	store.Close()
	store, err = OpenStore(filepath.Join(dir, "chains.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	last := img.Layers[len(img.Layers)-1]
	if src, err := store.ResolveLayer(context.Background(), last.ChainID.String(), nil); err != nil || src.DiffID != last.DiffID {
		t.Fatalf("after reopening: %+v, %v", src, err)
	}
	if _, err := store.Get(digest.FromString("unknown")); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown chain: got %v, want NotFound", err)
	}
}

// containerdThrough serves m and returns a registry client that pulls from up the way
// containerd does with a hosts.toml naming m as up's mirror, recording its requests.
func containerdThrough(t *testing.T, up string, m *Mirror) (*registry.Client, *recordingTransport, string) {
	t.Helper()
	mirrorSrv := httptest.NewServer(m)
	t.Cleanup(mirrorSrv.Close)
	hostsDir := filepath.Join(t.TempDir(), "certs.d")
	os.MkdirAll(filepath.Join(hostsDir, up), 0o755)
	hostsToml := "server = \"http://" + up + "\"\n[host.\"" + mirrorSrv.URL + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	if err := os.WriteFile(filepath.Join(hostsDir, up, "hosts.toml"), []byte(hostsToml), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recordingTransport{}
	containerd := registry.New(
		registry.WithHostsDir(hostsDir),
		registry.WithCredentials(func(string) (string, string, error) { return "user", "pass", nil }),
		registry.WithHTTPClient(&http.Client{Transport: rec}),
	)
	return containerd, rec, mirrorSrv.URL
}

// TestBlobsComeThroughTheBlockCache pulls every layer blob of an image through the mirror
// twice: both copies are whole and verified, and the registry sent each blob once.
func TestBlobsComeThroughTheBlockCache(t *testing.T) {
	var sent atomic.Int64
	up := countingUpstream(t, &sent)
	ref := up + "/team/app:v1"
	pushImage(t, ref)
	store, err := OpenStore(filepath.Join(t.TempDir(), "chains.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	client := registry.New(registry.WithInsecureRegistries(up))
	cache, err := blockcache.New(4<<20, blockcache.WithBlockSize(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	containerd, _, mirrorURL := containerdThrough(t, up, New(client, store, WithBlobs(blobs.New(cache, client))))
	img, err := containerd.Resolve(t.Context(), ref, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	sent.Store(0) // the config went through before
	var total int64
	for round := range 2 {
		for _, l := range img.Layers {
			rc, err := containerd.OpenBlob(t.Context(), up, "team/app", l.Descriptor)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc) // OpenBlob checks the digest at EOF
			rc.Close()
			if err != nil || n != l.Descriptor.Size {
				t.Fatalf("round %d, layer %s: %d bytes, %v", round, l.Descriptor.Digest, n, err)
			}
			if round == 0 {
				total += n
			}
		}
	}
	if got := sent.Load(); got != total {
		t.Errorf("registry sent %d blob bytes for two pulls of %d bytes, want one copy", got, total)
	}
	if before := cache.Stats().Fills; before == 0 {
		t.Error("no block went through the cache")
	}

	// Without credentials, the caller gets the registry's own challenge.
	resp, err := http.Get(mirrorURL + "/v2/team/app/blobs/" + img.Layers[0].Descriptor.Digest.String() + "?ns=" + up)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("blob without credentials: %s, challenge %q; want 401 with the registry's challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

// recordingTransport records the URL of every request containerd's side sends.
type recordingTransport struct {
	mu   sync.Mutex
	urls []string
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.urls = append(rt.urls, r.URL.String())
	rt.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (rt *recordingTransport) seen() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]string(nil), rt.urls...)
}

func TestMirrorRequestErrors(t *testing.T) {
	store, err := OpenStore(filepath.Join(t.TempDir(), "chains.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	up := upstream(t)
	srv := httptest.NewServer(New(registry.New(registry.WithInsecureRegistries(up)), store))
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{"GET", "/v2/", false, http.StatusOK},
		{"GET", "/v2/team/app/manifests/v1", false, http.StatusBadRequest},                // no ns
		{"PUT", "/v2/team/app/manifests/v1?ns=" + up, false, http.StatusMethodNotAllowed}, // pulls only
		{"GET", "/v2/team/app/manifests/v1?ns=" + up, false, http.StatusUnauthorized},     // challenge passed through
		{"GET", "/v2/team/app/manifests/none?ns=" + up, true, http.StatusNotFound},        // upstream's answer
		{"GET", "/v2/team/app/manifests/v1?ns=127.0.0.1:1", false, http.StatusBadGateway}, // unreachable
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		if tc.auth {
			req.SetBasicAuth("user", "pass")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != `Basic realm="upstream"` {
			t.Errorf("challenge not passed through: %q", resp.Header.Get("WWW-Authenticate"))
		}
	}
}

package registry

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is an in-process registry (go-containerregistry's). Test
// images are pushed through pushHost, which serves the bare registry; the
// client under test talks to Host, which may wrap the registry in a
// middleware (auth, fault injection).
type testRegistry struct {
	Handler  http.Handler
	Server   *httptest.Server
	Host     string // host:port of Server
	pushHost string
}

type middleware func(http.Handler) http.Handler

func newTestRegistry(t *testing.T, wrap middleware) *testRegistry {
	t.Helper()
	return startRegistry(t, wrap, false)
}

func newTLSTestRegistry(t *testing.T, wrap middleware) *testRegistry {
	t.Helper()
	return startRegistry(t, wrap, true)
}

func startRegistry(t *testing.T, wrap middleware, useTLS bool) *testRegistry {
	t.Helper()
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	push := httptest.NewServer(h)
	t.Cleanup(push.Close)
	var served http.Handler = h
	if wrap != nil {
		served = wrap(h)
	}
	srv := httptest.NewUnstartedServer(served)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // expected TLS handshake failures
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return &testRegistry{Handler: h, Server: srv, Host: hostOf(t, srv.URL), pushHost: hostOf(t, push.URL)}
}

func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// fixture describes the images pushed by pushFixtures.
type fixture struct {
	// OCI index (linux/amd64 + linux/arm64, OCI manifests) at app/multi:v1.
	Index  v1.ImageIndex
	Images map[string]v1.Image // by architecture
	// Docker manifest list (Docker manifests) at app/dlist:v1.
	DockerList   v1.ImageIndex
	DockerImages map[string]v1.Image
	// Single Docker schema 2 manifest at app/single:v1.
	Single v1.Image
	// Single OCI manifest at app/ocisingle:v1.
	OCISingle v1.Image
}

// pushFixtures creates random fixture images and pushes them to reg.
func pushFixtures(t *testing.T, reg *testRegistry) *fixture {
	t.Helper()
	f := newFixture(t)
	f.push(t, reg)
	return f
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{Images: map[string]v1.Image{}, DockerImages: map[string]v1.Image{}}
	var ociAdds, dockerAdds []mutate.IndexAddendum
	for i, arch := range []string{"amd64", "arm64"} {
		oci := makeImage(t, true, arch, 2+i)
		docker := makeImage(t, false, arch, 2)
		f.Images[arch] = oci
		f.DockerImages[arch] = docker
		p := &v1.Platform{OS: "linux", Architecture: arch}
		if arch == "arm64" {
			p.Variant = "v8"
		}
		ociAdds = append(ociAdds, mutate.IndexAddendum{Add: oci, Descriptor: v1.Descriptor{Platform: p}})
		dockerAdds = append(dockerAdds, mutate.IndexAddendum{Add: docker, Descriptor: v1.Descriptor{Platform: p}})
	}
	f.Index = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), ociAdds...)
	f.DockerList = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList), dockerAdds...)
	f.Single = makeImage(t, false, "amd64", 3)
	f.OCISingle = makeImage(t, true, "amd64", 1)
	return f
}

// push uploads the fixture images to reg.
func (f *fixture) push(t *testing.T, reg *testRegistry) {
	t.Helper()
	if err := remote.WriteIndex(pushRef(t, reg, "app/multi:v1"), f.Index); err != nil {
		t.Fatalf("push index: %v", err)
	}
	if err := remote.WriteIndex(pushRef(t, reg, "app/dlist:v1"), f.DockerList); err != nil {
		t.Fatalf("push manifest list: %v", err)
	}
	if err := remote.Write(pushRef(t, reg, "app/single:v1"), f.Single); err != nil {
		t.Fatalf("push image: %v", err)
	}
	if err := remote.Write(pushRef(t, reg, "app/ocisingle:v1"), f.OCISingle); err != nil {
		t.Fatalf("push image: %v", err)
	}
}

func pushRef(t *testing.T, reg *testRegistry, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(reg.pushHost+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// makeImage builds a random image with n layers for linux/arch, with OCI or
// Docker media types throughout.
func makeImage(t *testing.T, oci bool, arch string, n int) v1.Image {
	t.Helper()
	base := empty.Image
	layerType := types.DockerLayer
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
		layerType = types.OCILayer
	} else {
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.DockerManifestSchema2), types.DockerConfigJSON)
	}
	var layers []v1.Layer
	for i := range n {
		l, err := random.Layer(int64(512*(i+1)), layerType)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDigest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// testClient returns a client for plain-HTTP test registries that ignores
// the user's real docker config and retries quickly.
func testClient(t *testing.T, reg *testRegistry, opts ...Option) *Client {
	t.Helper()
	base := []Option{
		WithInsecureRegistries(reg.Host),
		WithDockerConfig(t.TempDir()),
		WithRetry(3, 5*time.Millisecond),
		WithRequestTimeout(5 * time.Second),
	}
	return New(append(base, opts...)...)
}

// writeDockerConfig writes config.json with the given auths entries and
// returns its directory.
func writeDockerConfig(t *testing.T, auths map[string]map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// writeHostsToml writes <root>/<host>/hosts.toml.
func writeHostsToml(t *testing.T, root, host, content string) {
	t.Helper()
	dir := filepath.Join(root, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeServerCert writes the PEM certificate of a TLS test server.
func writeServerCert(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readAllClose(t *testing.T, rc io.ReadCloser) ([]byte, error) {
	t.Helper()
	defer rc.Close()
	return io.ReadAll(rc)
}

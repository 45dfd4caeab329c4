package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestNotFound(t *testing.T) {
	reg := newTestRegistry(t, nil)
	pushFixtures(t, reg)
	c := testClient(t, reg)
	ctx := context.Background()
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	missing := digest.FromString("no such blob")

	tests := []struct {
		name string
		op   func() error
	}{
		{"resolve unknown tag", func() error {
			_, err := c.Resolve(ctx, reg.Host+"/app/multi:nope", amd64)
			return err
		}},
		{"resolve unknown repository", func() error {
			_, err := c.Resolve(ctx, reg.Host+"/nope/nope:v1", amd64)
			return err
		}},
		{"fetch manifest unknown digest", func() error {
			_, _, err := c.FetchManifest(ctx, reg.Host+"/app/multi@"+missing.String())
			return err
		}},
		{"open unknown blob", func() error {
			_, err := c.OpenBlob(ctx, reg.Host, "app/single", ocispec.Descriptor{Digest: missing, Size: 12})
			return err
		}},
		{"range of unknown blob", func() error {
			_, err := c.ReadBlobRange(ctx, reg.Host, "app/single", missing, 0, 10)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !errors.Is(err, ErrNotFound) || !errdefs.IsNotFound(err) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

// corruptingMiddleware flips one byte in the body of GET responses whose
// path ends with suffix.
func corruptingMiddleware(suffix string) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, suffix) {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 0 {
				body[len(body)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
		})
	}
}

func TestDigestMismatch(t *testing.T) {
	ctx := context.Background()
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}

	// The same images are pushed to a fresh registry per case, served
	// through a middleware that corrupts one document.
	f := newFixture(t)
	layers, err := f.Single.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layerDigest, _ := layers[0].Digest()
	layerSize, _ := layers[0].Size()
	cfgDigest, err := f.Single.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	amdDigest := mustDigest(t, f.Images["amd64"])

	tests := []struct {
		name    string
		corrupt string // path suffix to corrupt
		op      func(c *Client, host string) error
	}{
		{"blob", layerDigest.String(), func(c *Client, host string) error {
			rc, err := c.OpenBlob(ctx, host, "app/single", ocispec.Descriptor{Digest: digest.Digest(layerDigest.String()), Size: layerSize})
			if err != nil {
				return err
			}
			_, err = readAllClose(t, rc)
			return err
		}},
		{"blob with wrong size in descriptor", "", func(c *Client, host string) error {
			_, err := c.OpenBlob(ctx, host, "app/single", ocispec.Descriptor{Digest: digest.Digest(layerDigest.String()), Size: layerSize + 1})
			return err
		}},
		{"config", cfgDigest.String(), func(c *Client, host string) error {
			_, err := c.Resolve(ctx, host+"/app/single:v1", amd64)
			return err
		}},
		{"platform manifest", amdDigest, func(c *Client, host string) error {
			_, err := c.Resolve(ctx, host+"/app/multi:v1", amd64)
			return err
		}},
		{"manifest by tag vs Docker-Content-Digest", "/manifests/v1", func(c *Client, host string) error {
			_, _, err := c.FetchManifest(ctx, host+"/app/single:v1")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mw middleware
			if tt.corrupt != "" {
				mw = corruptingMiddleware(tt.corrupt)
			}
			reg := newTestRegistry(t, mw)
			f.push(t, reg)
			err := tt.op(testClient(t, reg), reg.Host)
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want ErrDigestMismatch", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestManifestTooLarge(t *testing.T) {
	big := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"annotations":{"pad":"%s"}}`,
		ocispec.MediaTypeImageManifest, strings.Repeat("x", MaxManifestSize))
	tests := []struct {
		name          string
		contentLength bool
	}{
		{"announced by Content-Length", true},
		{"chunked", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				if tt.contentLength {
					w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				}
				_, _ = io.Copy(w, bytes.NewReader([]byte(big)))
			}))
			t.Cleanup(srv.Close)
			host := hostOf(t, srv.URL)
			c := New(WithInsecureRegistries(host), WithDockerConfig(t.TempDir()))
			_, _, err := c.FetchManifest(context.Background(), host+"/app:v1")
			if !errors.Is(err, ErrManifestTooLarge) {
				t.Fatalf("err = %v, want ErrManifestTooLarge", err)
			}
		})
	}
}

func TestUnsupportedSchema1(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
		_, _ = io.WriteString(w, `{"schemaVersion":1,"name":"app","tag":"v1","fsLayers":[]}`)
	}))
	t.Cleanup(srv.Close)
	host := hostOf(t, srv.URL)
	c := New(WithInsecureRegistries(host), WithDockerConfig(t.TempDir()))
	_, err := c.Resolve(context.Background(), host+"/app:v1", ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if !errors.Is(err, ErrUnsupportedMediaType) {
		t.Fatalf("err = %v, want ErrUnsupportedMediaType", err)
	}
}

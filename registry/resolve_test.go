package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestResolve(t *testing.T) {
	reg := newTestRegistry(t, nil)
	f := pushFixtures(t, reg)
	c := testClient(t, reg)
	ctx := context.Background()

	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	tests := []struct {
		name          string
		ref           string
		platform      ocispec.Platform
		want          v1.Image
		wantIndex     string // "" when the ref names a manifest
		wantMediaType string
	}{
		{"oci index by tag amd64", reg.Host + "/app/multi:v1", amd64, f.Images["amd64"], mustDigest(t, f.Index), ocispec.MediaTypeImageManifest},
		{"oci index by tag arm64", reg.Host + "/app/multi:v1", arm64, f.Images["arm64"], mustDigest(t, f.Index), ocispec.MediaTypeImageManifest},
		{"oci index by tag arm64/v8", reg.Host + "/app/multi:v1", ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, f.Images["arm64"], mustDigest(t, f.Index), ocispec.MediaTypeImageManifest},
		{"oci index by digest", reg.Host + "/app/multi@" + mustDigest(t, f.Index), arm64, f.Images["arm64"], mustDigest(t, f.Index), ocispec.MediaTypeImageManifest},
		{"docker list by tag", reg.Host + "/app/dlist:v1", amd64, f.DockerImages["amd64"], mustDigest(t, f.DockerList), images.MediaTypeDockerSchema2Manifest},
		{"docker list by tag and digest", reg.Host + "/app/dlist:v1@" + mustDigest(t, f.DockerList), arm64, f.DockerImages["arm64"], mustDigest(t, f.DockerList), images.MediaTypeDockerSchema2Manifest},
		{"docker manifest by tag", reg.Host + "/app/single:v1", amd64, f.Single, "", images.MediaTypeDockerSchema2Manifest},
		{"oci manifest by digest", reg.Host + "/app/ocisingle@" + mustDigest(t, f.OCISingle), amd64, f.OCISingle, "", ocispec.MediaTypeImageManifest},
		{"platform manifest by digest", reg.Host + "/app/multi@" + mustDigest(t, f.Images["amd64"]), amd64, f.Images["amd64"], "", ocispec.MediaTypeImageManifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := c.Resolve(ctx, tt.ref, tt.platform)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if img.Host != reg.Host {
				t.Errorf("Host = %q, want %q", img.Host, reg.Host)
			}
			if img.IndexDigest.String() != tt.wantIndex {
				t.Errorf("IndexDigest = %q, want %q", img.IndexDigest, tt.wantIndex)
			}
			if got, want := img.Manifest.Digest.String(), mustDigest(t, tt.want); got != want {
				t.Errorf("manifest digest = %s, want %s", got, want)
			}
			if img.Manifest.MediaType != tt.wantMediaType {
				t.Errorf("manifest media type = %s, want %s", img.Manifest.MediaType, tt.wantMediaType)
			}
			raw, err := tt.want.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			if img.Manifest.Size != int64(len(raw)) {
				t.Errorf("manifest size = %d, want %d", img.Manifest.Size, len(raw))
			}
			if tt.wantIndex != "" && (img.Manifest.Platform == nil || img.Manifest.Platform.Architecture != tt.platform.Architecture) {
				t.Errorf("manifest platform = %+v, want %s", img.Manifest.Platform, tt.platform.Architecture)
			}
			if img.ConfigBody.Architecture != tt.platform.Architecture {
				t.Errorf("config architecture = %s, want %s", img.ConfigBody.Architecture, tt.platform.Architecture)
			}
			checkLayers(t, c, img, tt.want)
		})
	}
}

// checkLayers compares img.Layers with the pushed image: digests, diffIDs,
// chain IDs (computed here independently) and blob content via OpenBlob.
func checkLayers(t *testing.T, c *Client, img *Image, want v1.Image) {
	t.Helper()
	layers, err := want.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != len(layers) {
		t.Fatalf("got %d layers, want %d", len(img.Layers), len(layers))
	}
	var chain digest.Digest
	for i, l := range layers {
		got := img.Layers[i]
		dgst, _ := l.Digest()
		diffID, _ := l.DiffID()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		if got.Descriptor.Digest.String() != dgst.String() || got.Descriptor.Size != size || got.Descriptor.MediaType != string(mt) {
			t.Errorf("layer %d descriptor = %+v, want %s %d %s", i, got.Descriptor, dgst, size, mt)
		}
		if got.DiffID.String() != diffID.String() {
			t.Errorf("layer %d diffID = %s, want %s", i, got.DiffID, diffID)
		}
		if i == 0 {
			chain = digest.Digest(diffID.String())
		} else {
			chain = digest.FromString(chain.String() + " " + diffID.String())
		}
		if got.ChainID != chain {
			t.Errorf("layer %d chainID = %s, want %s", i, got.ChainID, chain)
		}

		rc, err := c.OpenBlob(context.Background(), img.Host, img.Repository, got.Descriptor)
		if err != nil {
			t.Fatalf("OpenBlob layer %d: %v", i, err)
		}
		blob, err := readAllClose(t, rc)
		if err != nil {
			t.Fatalf("read layer %d: %v", i, err)
		}
		wantRC, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		wantBlob, err := io.ReadAll(wantRC)
		wantRC.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(blob, wantBlob) {
			t.Errorf("layer %d: blob content differs (%d bytes, want %d)", i, len(blob), len(wantBlob))
		}
	}
}

func TestResolvePlatformNotInIndex(t *testing.T) {
	reg := newTestRegistry(t, nil)
	pushFixtures(t, reg)
	c := testClient(t, reg)
	_, err := c.Resolve(context.Background(), reg.Host+"/app/multi:v1", ocispec.Platform{OS: "linux", Architecture: "s390x"})
	if !errors.Is(err, ErrNotFound) || !errdefs.IsNotFound(err) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestFetchManifest(t *testing.T) {
	reg := newTestRegistry(t, nil)
	f := pushFixtures(t, reg)
	c := testClient(t, reg)
	ctx := context.Background()

	indexRaw, err := f.Index.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	singleRaw, err := f.Single.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		ref       string
		wantBody  []byte
		wantType  string
		wantDgest string
	}{
		{"index by tag", reg.Host + "/app/multi:v1", indexRaw, ocispec.MediaTypeImageIndex, mustDigest(t, f.Index)},
		{"index by digest", reg.Host + "/app/multi@" + mustDigest(t, f.Index), indexRaw, ocispec.MediaTypeImageIndex, mustDigest(t, f.Index)},
		{"docker manifest by tag", reg.Host + "/app/single:v1", singleRaw, images.MediaTypeDockerSchema2Manifest, mustDigest(t, f.Single)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, desc, err := c.FetchManifest(ctx, tt.ref)
			if err != nil {
				t.Fatalf("FetchManifest: %v", err)
			}
			if !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body differs")
			}
			if desc.MediaType != tt.wantType || desc.Digest.String() != tt.wantDgest || desc.Size != int64(len(tt.wantBody)) {
				t.Errorf("descriptor = %+v, want %s %s %d", desc, tt.wantType, tt.wantDgest, len(tt.wantBody))
			}
		})
	}
}

func TestParseRef(t *testing.T) {
	const dg = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	tests := []struct {
		ref                             string
		name, host, repo, object, dgest string
		wantErr                         bool
	}{
		{ref: "busybox", name: "docker.io/library/busybox:latest", host: "docker.io", repo: "library/busybox", object: "latest"},
		{ref: "127.0.0.1:5000/app:v1", name: "127.0.0.1:5000/app:v1", host: "127.0.0.1:5000", repo: "app", object: "v1"},
		{ref: "localhost/a/b@" + dg, name: "localhost/a/b@" + dg, host: "localhost", repo: "a/b", object: dg, dgest: dg},
		{ref: "example.com/x:tag@" + dg, name: "example.com/x@" + dg, host: "example.com", repo: "x", object: dg, dgest: dg},
		{ref: "Upper/Case", wantErr: true},
		{ref: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			r, err := parseRef(tt.ref)
			if tt.wantErr {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.name != tt.name || r.host != tt.host || r.repository != tt.repo || r.object != tt.object || r.digest.String() != tt.dgest {
				t.Errorf("parseRef = %+v", r)
			}
		})
	}
}

func TestResolveSingleManifestWrongPlatform(t *testing.T) {
	reg := newTestRegistry(t, nil)
	pushFixtures(t, reg)
	c := testClient(t, reg)
	// app/single is linux/amd64.
	_, err := c.Resolve(context.Background(), reg.Host+"/app/single:v1", ocispec.Platform{OS: "linux", Architecture: "arm64"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	t.Logf("error: %v", err)
}

package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Size limits for documents read into memory.
const (
	// MaxManifestSize is the largest manifest or index accepted (4 MiB).
	MaxManifestSize = 4 << 20
	// MaxConfigSize is the largest image config accepted (8 MiB).
	MaxConfigSize = 8 << 20
)

// manifestAccept lists the manifest media types this package understands.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	images.MediaTypeDockerSchema2ManifestList,
	ocispec.MediaTypeImageManifest,
	images.MediaTypeDockerSchema2Manifest,
}, ", ")

// FetchManifest returns the raw bytes and descriptor of the manifest or index
// that ref (tag or digest) names, verified against its digest. The media type
// comes from the registry's Content-Type, else from the document itself.
func (c *Client) FetchManifest(ctx context.Context, ref string) ([]byte, ocispec.Descriptor, error) {
	r, err := parseRef(ref)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("fetch manifest: %w", err)
	}
	body, desc, err := c.getManifest(ctx, r.host, r.repository, r.object, ocispec.Descriptor{Digest: r.digest})
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("fetch manifest %s: %w", r.name, err)
	}
	return body, desc, nil
}

// getManifest fetches /v2/<repo>/manifests/<object>. When want.Digest is set
// (fetch by digest) the body must match it, and want.Size when non-zero;
// otherwise (fetch by tag) the body must match the Docker-Content-Digest
// header if the registry sent one.
func (c *Client) getManifest(ctx context.Context, host, repo, object string, want ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	caps := docker.HostCapabilityPull
	if want.Digest == "" {
		caps |= docker.HostCapabilityResolve // resolving a tag must be done by a trusted host
	}
	resp, err := c.do(ctx, request{
		method:     http.MethodGet,
		host:       host,
		repository: repo,
		kind:       "manifests",
		object:     object,
		header:     http.Header{"Accept": {manifestAccept}},
		caps:       caps,
	})
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	defer resp.Body.Close()

	body, err := readLimited(resp, MaxManifestSize)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("read manifest: %w", err)
	}
	dgst := want.Digest
	if dgst == "" {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
			dgst, err = digest.Parse(h)
			if err != nil {
				return nil, ocispec.Descriptor{}, fmt.Errorf("registry sent invalid Docker-Content-Digest %q: %w", h, err)
			}
		} else {
			dgst = digest.FromBytes(body)
		}
	}
	if err := verifyBytes(body, dgst, want.Size); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w", object, err)
	}
	mediaType, err := manifestMediaType(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	return body, ocispec.Descriptor{MediaType: mediaType, Digest: dgst, Size: int64(len(body))}, nil
}

// readLimited reads a whole response body of at most limit bytes.
func readLimited(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%d bytes exceeds the %d byte limit: %w", resp.ContentLength, limit, ErrManifestTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("more than %d bytes: %w", limit, ErrManifestTooLarge)
	}
	return body, nil
}

// verifyBytes checks b against dgst, and against size when size > 0.
func verifyBytes(b []byte, dgst digest.Digest, size int64) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %w", dgst, err)
	}
	if size > 0 && int64(len(b)) != size {
		return fmt.Errorf("got %d bytes, descriptor says %d: %w", len(b), size, ErrDigestMismatch)
	}
	if got := dgst.Algorithm().FromBytes(b); got != dgst {
		return fmt.Errorf("content has digest %s, expected %s: %w", got, dgst, ErrDigestMismatch)
	}
	return nil
}

// manifestMediaType determines the media type of a manifest document: the
// document's own mediaType field (covered by the digest) wins, then a
// specific Content-Type, then the document's shape (OCI allows omitting
// mediaType).
func manifestMediaType(contentType string, body []byte) (string, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		FSLayers      json.RawMessage `json:"fsLayers"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return "", fmt.Errorf("not a JSON manifest: %w", err)
	}
	if probe.MediaType != "" {
		return probe.MediaType, nil
	}
	if ct, _, err := mime.ParseMediaType(contentType); err == nil &&
		ct != "application/json" && ct != "text/plain" && ct != "application/octet-stream" {
		return ct, nil
	}
	switch {
	case probe.SchemaVersion == 1 || probe.FSLayers != nil:
		return images.MediaTypeDockerSchema1Manifest, nil
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex, nil
	case probe.Config != nil:
		return ocispec.MediaTypeImageManifest, nil
	}
	return "", fmt.Errorf("cannot tell the manifest type: %w", ErrUnsupportedMediaType)
}

func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == images.MediaTypeDockerSchema2ManifestList
}

func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == images.MediaTypeDockerSchema2Manifest
}

func isConfigType(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == images.MediaTypeDockerSchema2Config
}

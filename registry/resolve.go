package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxIndexDepth bounds how many nested indexes Resolve follows.
const maxIndexDepth = 4

// Image is a resolved image for one platform.
type Image struct {
	Name         string             // normalized reference, e.g. docker.io/library/busybox:latest
	Host         string             // registry host from the reference, e.g. 127.0.0.1:5000
	Repository   string             // e.g. library/busybox
	IndexDigest  digest.Digest      // digest of the index the reference named; "" when it named a manifest
	Manifest     ocispec.Descriptor // the platform manifest (with its platform when chosen from an index)
	ManifestBody ocispec.Manifest
	ConfigBody   ocispec.Image
	Layers       []Layer
}

// Layer is one layer of an Image.
type Layer struct {
	Descriptor ocispec.Descriptor // media type, digest, size, annotations
	DiffID     digest.Digest      // digest of the uncompressed layer
	ChainID    digest.Digest      // identity.ChainID of the diffIDs up to and including this layer
}

// Resolve resolves ref (e.g. "127.0.0.1:5000/app:v1" or "...@sha256:...")
// for platform: index → platform manifest → config. A zero platform means
// the host's default platform. Platforms match as in containerd
// (platforms.Only); a single-manifest image whose config names a platform
// that does not match is rejected with ErrNotFound. Every document is
// verified against its digest.
func (c *Client) Resolve(ctx context.Context, ref string, platform ocispec.Platform) (*Image, error) {
	r, err := parseRef(ref)
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	img, err := c.resolve(ctx, r, platform)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.name, err)
	}
	return img, nil
}

func (c *Client) resolve(ctx context.Context, r imageRef, platform ocispec.Platform) (*Image, error) {
	if platform.OS == "" && platform.Architecture == "" {
		platform = platforms.DefaultSpec()
	}
	platform = platforms.Normalize(platform)

	body, desc, err := c.getManifest(ctx, r.host, r.repository, r.object, ocispec.Descriptor{Digest: r.digest})
	if err != nil {
		return nil, err
	}
	img := &Image{Name: r.name, Host: r.host, Repository: r.repository}
	for depth := 0; isIndexType(desc.MediaType); depth++ {
		if depth == maxIndexDepth {
			return nil, fmt.Errorf("indexes nested deeper than %d", maxIndexDepth)
		}
		if depth == 0 {
			img.IndexDigest = desc.Digest
		}
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fmt.Errorf("decode index %s: %w", desc.Digest, err)
		}
		chosen, err := selectManifest(idx.Manifests, platform)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		body, desc, err = c.getManifest(ctx, r.host, r.repository, chosen.Digest.String(), chosen)
		if err != nil {
			return nil, err
		}
		// Keep the index's descriptor (platform, annotations) but the
		// media type of the document actually served.
		chosen.MediaType = desc.MediaType
		desc = chosen
	}
	if !isManifestType(desc.MediaType) {
		return nil, fmt.Errorf("manifest %s has media type %q: %w", desc.Digest, desc.MediaType, ErrUnsupportedMediaType)
	}
	img.Manifest = desc
	if err := json.Unmarshal(body, &img.ManifestBody); err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", desc.Digest, err)
	}
	cfg, err := c.fetchConfig(ctx, r.host, r.repository, img.ManifestBody.Config)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	img.ConfigBody = cfg
	// Like containerd, reject a single-platform image built for another
	// platform (an index was already matched above).
	if img.IndexDigest == "" && cfg.OS != "" && cfg.Architecture != "" &&
		!platforms.Only(platform).Match(platforms.Normalize(cfg.Platform)) {
		return nil, fmt.Errorf("image is for %s, not %s: %w",
			platforms.FormatAll(cfg.Platform), platforms.FormatAll(platform), ErrNotFound)
	}
	img.Layers, err = buildLayers(img.ManifestBody.Layers, cfg.RootFS.DiffIDs)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	return img, nil
}

// selectManifest picks the best manifest for platform from an index, using
// containerd's platform matching (platforms.Only: e.g. arm64 also accepts
// arm64/v8, linux/arm/v7 also accepts v6).
func selectManifest(descs []ocispec.Descriptor, platform ocispec.Platform) (ocispec.Descriptor, error) {
	matcher := platforms.Only(platform)
	var candidates []ocispec.Descriptor
	for _, d := range descs {
		if d.Platform == nil || !(isManifestType(d.MediaType) || isIndexType(d.MediaType)) {
			continue
		}
		if matcher.Match(platforms.Normalize(*d.Platform)) {
			candidates = append(candidates, d)
		}
	}
	if len(candidates) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("no manifest for platform %s: %w", platforms.FormatAll(platform), ErrNotFound)
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		return matcher.Less(platforms.Normalize(*candidates[i].Platform), platforms.Normalize(*candidates[j].Platform))
	})
	return candidates[0], nil
}

// fetchConfig fetches and verifies an image config blob.
func (c *Client) fetchConfig(ctx context.Context, host, repo string, desc ocispec.Descriptor) (ocispec.Image, error) {
	var cfg ocispec.Image
	if !isConfigType(desc.MediaType) {
		return cfg, fmt.Errorf("config media type %q is not a container image config: %w", desc.MediaType, ErrUnsupportedMediaType)
	}
	if desc.Size > MaxConfigSize {
		return cfg, fmt.Errorf("config %s: %d bytes exceeds the %d byte limit: %w", desc.Digest, desc.Size, MaxConfigSize, ErrManifestTooLarge)
	}
	if err := desc.Digest.Validate(); err != nil {
		return cfg, fmt.Errorf("config digest %q: %w", desc.Digest, err)
	}
	resp, err := c.do(ctx, blobRequest(host, repo, desc.Digest, nil))
	if err != nil {
		return cfg, fmt.Errorf("fetch config %s: %w", desc.Digest, err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp, MaxConfigSize)
	if err != nil {
		return cfg, fmt.Errorf("read config %s: %w", desc.Digest, err)
	}
	if err := verifyBytes(body, desc.Digest, desc.Size); err != nil {
		return cfg, fmt.Errorf("config %s: %w", desc.Digest, err)
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return cfg, fmt.Errorf("decode config %s: %w", desc.Digest, err)
	}
	return cfg, nil
}

// buildLayers pairs manifest layers with config diffIDs and computes chain IDs.
func buildLayers(descs []ocispec.Descriptor, diffIDs []digest.Digest) ([]Layer, error) {
	if len(descs) != len(diffIDs) {
		return nil, fmt.Errorf("manifest has %d layers but config has %d diffIDs", len(descs), len(diffIDs))
	}
	chainIDs := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	layers := make([]Layer, len(descs))
	for i, d := range descs {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("layer %d digest %q: %w", i, d.Digest, err)
		}
		if err := diffIDs[i].Validate(); err != nil {
			return nil, fmt.Errorf("layer %d diffID %q: %w", i, diffIDs[i], err)
		}
		layers[i] = Layer{Descriptor: d, DiffID: diffIDs[i], ChainID: chainIDs[i]}
	}
	return layers, nil
}

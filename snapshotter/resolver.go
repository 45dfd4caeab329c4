package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// Labels that containerd's CRI plugin (with disable_snapshot_annotations = false) and nerdctl
// (for some snapshotter names) add to the Prepare of each layer.
const (
	LabelCRIImageRef       = "containerd.io/snapshot/cri.image-ref"
	LabelCRILayerDigest    = "containerd.io/snapshot/cri.layer-digest"
	LabelCRIManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
)

// ImageResolver resolves an image reference to its manifest, config and layers.
// registry.Client satisfies it.
type ImageResolver interface {
	Resolve(ctx context.Context, ref string, platform ocispec.Platform) (*registry.Image, error)
}

// LabelResolver finds a layer's source from the CRI labels of a Prepare call: it resolves the
// image by its manifest digest, finds the layer, and checks that the layer's chain ID is the
// snapshot being prepared.
type LabelResolver struct {
	images   ImageResolver
	platform ocispec.Platform

	mu    sync.Mutex
	cache map[string]*registry.Image // by repository@manifest digest
}

// maxCachedImages bounds the images a LabelResolver remembers; an image is resolved once per
// pull, and its layers are prepared one after another.
const maxCachedImages = 64

// NewLabelResolver returns a resolver that reads images with images.
func NewLabelResolver(images ImageResolver) *LabelResolver {
	return &LabelResolver{images: images, platform: platforms.DefaultSpec(), cache: make(map[string]*registry.Image)}
}

// ResolveLayer implements LayerResolver.
func (r *LabelResolver) ResolveLayer(ctx context.Context, chainID string, labels map[string]string) (seed.Source, error) {
	ref, layerDigest, manifest := labels[LabelCRIImageRef], labels[LabelCRILayerDigest], labels[LabelCRIManifestDigest]
	if ref == "" || layerDigest == "" || manifest == "" {
		return seed.Source{}, fmt.Errorf("no CRI layer labels: %w", errdefs.ErrNotFound)
	}
	img, err := r.image(ctx, ref, digest.Digest(manifest))
	if err != nil {
		return seed.Source{}, err
	}
	for _, l := range img.Layers {
		if l.Descriptor.Digest.String() != layerDigest {
			continue
		}
		if l.ChainID.String() != chainID {
			return seed.Source{}, fmt.Errorf("layer %s of %s has chain ID %s, not the %s being prepared", layerDigest, ref, l.ChainID, chainID)
		}
		return seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID}, nil
	}
	return seed.Source{}, fmt.Errorf("manifest %s of %s has no layer %s: %w", manifest, ref, layerDigest, errdefs.ErrNotFound)
}

func (r *LabelResolver) image(ctx context.Context, ref string, manifest digest.Digest) (*registry.Image, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("label %s=%q: %w", LabelCRIImageRef, ref, err)
	}
	byDigest, err := reference.WithDigest(reference.TrimNamed(named), manifest)
	if err != nil {
		return nil, fmt.Errorf("label %s=%q: %w", LabelCRIManifestDigest, manifest, err)
	}
	r.mu.Lock()
	img, ok := r.cache[byDigest.String()]
	r.mu.Unlock()
	if ok {
		return img, nil
	}
	img, err = r.images.Resolve(ctx, byDigest.String(), r.platform)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if len(r.cache) >= maxCachedImages {
		clear(r.cache)
	}
	r.cache[byDigest.String()] = img
	r.mu.Unlock()
	return img, nil
}

// Resolvers asks each resolver in turn and returns the first answer: put the most direct
// source of truth first (labels), then what was learned on the side (the registry mirror).
type Resolvers []LayerResolver

// ResolveLayer implements LayerResolver. The error wraps errdefs.ErrNotFound only if no
// resolver failed for another reason.
func (rs Resolvers) ResolveLayer(ctx context.Context, chainID string, labels map[string]string) (seed.Source, error) {
	var errs []error
	allNotFound := true
	for _, r := range rs {
		src, err := r.ResolveLayer(ctx, chainID, labels)
		if err == nil {
			return src, nil
		}
		errs = append(errs, err)
		allNotFound = allNotFound && errdefs.IsNotFound(err)
	}
	err := errors.Join(errs...)
	if allNotFound {
		return seed.Source{}, fmt.Errorf("no source known for %s: %w", chainID, errdefs.ErrNotFound)
	}
	return seed.Source{}, err
}

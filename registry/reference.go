package registry

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// imageRef is a parsed, normalized image reference.
type imageRef struct {
	name       string        // e.g. docker.io/library/busybox:latest
	host       string        // e.g. docker.io
	repository string        // e.g. library/busybox
	object     string        // tag or digest, as used in the manifests URL
	digest     digest.Digest // set when the reference names a digest
}

// parseRef normalizes ref the way docker and containerd do: "busybox"
// becomes docker.io/library/busybox:latest. A reference with both a tag and
// a digest is resolved by digest.
func parseRef(ref string) (imageRef, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return imageRef{}, fmt.Errorf("parse reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	r := imageRef{
		name:       named.String(),
		host:       reference.Domain(named),
		repository: reference.Path(named),
	}
	switch n := named.(type) {
	case reference.Digested:
		r.digest = n.Digest()
		r.object = r.digest.String()
	case reference.Tagged:
		r.object = n.Tag()
	}
	return r, nil
}

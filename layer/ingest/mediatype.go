package ingest

import (
	"errors"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrUnsupportedMediaType means a layer's media type names a format Build cannot read.
var ErrUnsupportedMediaType = errors.New("unsupported layer media type")

// readable are the layer media types Build reads: tar streams, plain, gzip or zstd, in OCI
// and Docker schema 2 names, distributable or not. Build detects the compression from the
// stream itself, as containerd does for Docker's plain tar type, which tools also use for
// compressed layers.
var readable = map[string]bool{
	ocispec.MediaTypeImageLayer:                                    true,
	ocispec.MediaTypeImageLayerGzip:                                true,
	ocispec.MediaTypeImageLayerZstd:                                true,
	"application/vnd.oci.image.layer.nondistributable.v1.tar":      true,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": true,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": true,
	"application/vnd.docker.image.rootfs.diff.tar":                 true,
	"application/vnd.docker.image.rootfs.diff.tar.gzip":            true,
	"application/vnd.docker.image.rootfs.diff.tar.zstd":            true,
	"application/vnd.docker.image.rootfs.foreign.diff.tar":         true,
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":    true,
}

// CheckMediaType returns nil if Build reads layers of media type mt, or if mt is empty (a
// source that did not say: Build detects the compression), and otherwise an error wrapping
// ErrUnsupportedMediaType that says what the type is.
func CheckMediaType(mt string) error {
	base, _, _ := strings.Cut(mt, ";") // parameters do not change the format
	base = strings.ToLower(strings.TrimSpace(base))
	switch {
	case base == "" || readable[base]:
		return nil
	case strings.HasSuffix(base, "+encrypted"):
		return fmt.Errorf("layer media type %q: an encrypted layer, which only its keys' holder can read: %w", mt, ErrUnsupportedMediaType)
	case strings.Contains(base, ".layer.") || strings.Contains(base, ".rootfs."):
		return fmt.Errorf("layer media type %q: a layer encoding other than tar, tar+gzip or tar+zstd: %w", mt, ErrUnsupportedMediaType)
	}
	return fmt.Errorf("layer media type %q: not a container image layer: %w", mt, ErrUnsupportedMediaType)
}

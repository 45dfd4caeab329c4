package stargz

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobRanges reads ranges of blobs with this node's own credentials. registry.Client
// satisfies it.
type BlobRanges interface {
	ReadBlobRange(ctx context.Context, host, repository string, dgst digest.Digest, offset, length int64) (io.ReadCloser, error)
}

// OpenRemote opens the eStargz or zstd:chunked layer desc of repository on host, whose TOC
// has digest toc (TOCDigest), reading the blob with Range requests for exactly what
// the layer asks: its footer, its TOC, and each chunk a read needs (the layer keeps the last
// chunks it verified). Reads of the layer use ctx, so it is usable as long as ctx is. The
// node's block cache is not used: its blocks are larger than most chunks, and at 100 Mbit/s
// each block a read touched cost a container start as much as a whole chunk of busybox. A
// node in a P2P cluster opens the layer with Open over p2p.Node.Blob instead, whose blocks
// peers share.
func OpenRemote(ctx context.Context, ranges BlobRanges, host, repository string, desc ocispec.Descriptor, toc digest.Digest) (*Layer, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("stargz layer %q: %w", desc.Digest, err)
	}
	if desc.Size <= 0 {
		return nil, fmt.Errorf("stargz layer %s: size %d", desc.Digest, desc.Size)
	}
	r := &rangeReader{ctx: ctx, ranges: ranges, host: host, repository: repository, dgst: desc.Digest, size: desc.Size}
	l, err := Open(r, desc.Size, toc)
	if err != nil {
		return nil, fmt.Errorf("stargz layer %s in %s/%s: %w", desc.Digest, host, repository, err)
	}
	return l, nil
}

// rangeReader reads a blob at random, each read one Range request for exactly the bytes
// asked: an eStargz layer asks for its footer, its TOC and one chunk at a time.
type rangeReader struct {
	ctx              context.Context
	ranges           BlobRanges
	host, repository string
	dgst             digest.Digest
	size             int64
}

func (r *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: negative offset %d", r.dgst, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.size-off)
	rc, err := r.ranges.ReadBlobRange(r.ctx, r.host, r.repository, r.dgst, off, want)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p[:want])
	if err == nil && int64(n) < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

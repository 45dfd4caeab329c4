package ingest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// ErrMalformed is wrapped by every error about a layer stream that is not a well-formed,
// safe tar archive.
var ErrMalformed = errors.New("malformed layer")

// BlockSink receives the blocks of a stream in order, each as soon as it is complete.
type BlockSink interface {
	// WriteBlock is called once for block i, with its content and digest. data is valid only
	// during the call. An error stops the pass and is returned by Build.
	WriteBlock(ctx context.Context, i int, data []byte, sum layer.BlockDigest) error
}

// BlockSinkFunc adapts a function to BlockSink.
type BlockSinkFunc func(ctx context.Context, i int, data []byte, sum layer.BlockDigest) error

// WriteBlock calls f.
func (f BlockSinkFunc) WriteBlock(ctx context.Context, i int, data []byte, sum layer.BlockDigest) error {
	return f(ctx, i, data, sum)
}

// Options configure Build.
type Options struct {
	// BlockSize is the block size; layer.DefaultBlockSize when zero.
	BlockSize int64
	// DiffID, when set, is the digest the uncompressed stream must have.
	DiffID digest.Digest
	// Sink, when set, receives every block.
	Sink BlockSink
}

// maxZstdWindow bounds the memory a zstd frame may ask for: 128 MiB admits "zstd --long=27";
// a hostile frame header cannot make the pass allocate gigabytes.
const maxZstdWindow = 128 << 20

// ringSize is the number of block buffers between the parsing and the hashing goroutine.
const ringSize = 4

// Build reads a layer from r in one pass and returns its index. See the package doc.
func Build(ctx context.Context, r io.Reader, opts Options) (*layer.Index, error) {
	blockSize := opts.BlockSize
	if blockSize == 0 {
		blockSize = layer.DefaultBlockSize
	}
	if blockSize < layer.MinBlockSize || blockSize > layer.MaxBlockSize {
		return nil, fmt.Errorf("ingest: block size %d outside [%d, %d]", blockSize, layer.MinBlockSize, layer.MaxBlockSize)
	}
	in := bufio.NewReaderSize(r, 64<<10)
	src, closeSrc, err := decompress(in)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	defer closeSrc()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h := startHasher(ctx, cancel, int(blockSize), opts.Sink)
	br := &blockReader{src: src, buf: <-h.free, ctx: ctx, hasher: h}

	entries, parseErr := indexTar(br)
	if parseErr == nil {
		parseErr = br.finish()
	}
	hashErr := h.stop()
	switch {
	case hashErr != nil:
		return nil, fmt.Errorf("ingest: %w", hashErr)
	case parseErr != nil:
		if cause := context.Cause(ctx); cause != nil && errors.Is(parseErr, cause) {
			return nil, fmt.Errorf("ingest: %w", cause)
		}
		return nil, fmt.Errorf("ingest: %w", parseErr)
	}

	diffID := digest.NewDigest(digest.SHA256, h.diff)
	if opts.DiffID != "" && opts.DiffID != diffID {
		return nil, fmt.Errorf("ingest: uncompressed stream is %s, want diffID %s: %w", diffID, opts.DiffID, layer.ErrDigestMismatch)
	}
	x := &layer.Index{
		DiffID:  diffID,
		Blocks:  layer.BlockTable{BlockSize: blockSize, Size: br.offset(), Digests: h.digests},
		Entries: entries,
	}
	if err := x.Validate(); err != nil {
		return nil, fmt.Errorf("ingest: %w: %w", ErrMalformed, err)
	}
	return x, nil
}

// Compression is the compression of a layer stream, detected from its first bytes.
type Compression int

// Compressions Build understands.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	return [...]string{"uncompressed", "gzip", "zstd"}[c]
}

// DetectCompression tells the compression of a stream from its first bytes.
func DetectCompression(head []byte) Compression {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return Gzip
	case len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return Zstd
	}
	return Uncompressed
}

func decompress(in *bufio.Reader) (io.Reader, func(), error) {
	head, err := in.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read layer: %w", err)
	}
	switch DetectCompression(head) {
	case Gzip:
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip header: %w", ErrMalformed, err)
		}
		return zr, func() { zr.Close() }, nil
	case Zstd:
		zr, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: zstd header: %w", ErrMalformed, err)
		}
		return zr, zr.Close, nil
	}
	return in, func() {}, nil
}

// hasher digests full blocks in order in its own goroutine and hands them to the sink.
type hasher struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	sink    BlockSink
	full    chan filledBlock
	free    chan []byte
	done    chan struct{}
	err     error // set before done is closed
	diff    hash.Hash
	digests []layer.BlockDigest
}

type filledBlock struct {
	buf []byte
	n   int
}

func startHasher(ctx context.Context, cancel context.CancelCauseFunc, blockSize int, sink BlockSink) *hasher {
	h := &hasher{
		ctx: ctx, cancel: cancel, sink: sink,
		full: make(chan filledBlock, ringSize),
		free: make(chan []byte, ringSize),
		done: make(chan struct{}),
		diff: sha256.New(),
	}
	for range ringSize {
		h.free <- make([]byte, blockSize)
	}
	go h.run()
	return h
}

func (h *hasher) run() {
	defer close(h.done)
	for b := range h.full {
		if h.err == nil {
			h.err = h.consume(b.buf[:b.n])
			if h.err != nil {
				h.cancel(h.err)
			}
		}
		h.free <- b.buf
	}
}

func (h *hasher) consume(data []byte) error {
	h.diff.Write(data)
	sum := layer.DigestBlock(data)
	h.digests = append(h.digests, sum)
	if h.sink == nil {
		return nil
	}
	i := len(h.digests) - 1
	if err := h.sink.WriteBlock(h.ctx, i, data, sum); err != nil {
		return fmt.Errorf("block %d: %w", i, err)
	}
	return nil
}

// ship hands a filled buffer to the hasher and returns an empty one.
func (h *hasher) ship(buf []byte, n int) ([]byte, error) {
	h.full <- filledBlock{buf, n} // never blocks: at most ringSize buffers exist
	select {
	case next := <-h.free:
		return next, nil
	case <-h.ctx.Done():
		return nil, context.Cause(h.ctx)
	}
}

// stop waits for the hasher to consume what it was given and returns its error.
func (h *hasher) stop() error {
	close(h.full)
	<-h.done
	return h.err
}

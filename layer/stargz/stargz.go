package stargz

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

// ErrNotFound means the layer has no such file.
var ErrNotFound = errors.New("no such file in the layer")

// TOCDigest returns the digest of the TOC that desc's annotations name, and whether desc is
// an eStargz or zstd:chunked layer at all.
func TOCDigest(desc ocispec.Descriptor) (digest.Digest, bool) {
	for _, key := range []string{estargz.TOCJSONDigestAnnotation, zstdchunked.ManifestChecksumAnnotation} {
		if v, ok := desc.Annotations[key]; ok {
			if d, err := digest.Parse(v); err == nil {
				return d, true
			}
		}
	}
	return "", false
}

// Layer is an opened eStargz or zstd:chunked layer. It is safe for concurrent use if its
// io.ReaderAt is.
type Layer struct {
	mu      sync.Mutex
	extents []extent // the regular files in the virtual stream, by offset (Entries)

	blob    io.ReaderAt
	payload int64 // where the chunks end: the TOC's offset, or the blob's size
	// tocFile is the tar entry of the TOC itself (stargz.index.json) that an eStargz blob's
	// tar stream ends with, and tocData its content (checked against the TOC digest); nil
	// for zstd:chunked, whose TOC is no tar entry.
	tocFile  *tar.Header
	tocData  []byte
	chunks   *chunkCache // the last chunks read, verified
	r        *estargz.Reader
	verifier estargz.TOCEntryVerifier
}

// decompressors are the formats Open reads: eStargz (gzip, current and legacy footers) and
// zstd:chunked.
func decompressors() []estargz.Decompressor {
	return []estargz.Decompressor{new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor), new(zstdchunked.Decompressor)}
}

// payloadEnd returns where the chunks of the size-byte blob end, from its footer, and
// where the footer begins.
func payloadEnd(ra io.ReaderAt, size int64) (tocOffset, footerOffset int64) {
	for _, d := range decompressors() {
		fs := d.FooterSize()
		if fs > size {
			continue
		}
		footer := make([]byte, fs)
		if _, err := ra.ReadAt(footer, size-fs); err != nil && !errors.Is(err, io.EOF) {
			return size, size
		}
		if _, tocOffset, _, err := d.ParseFooter(footer); err == nil && tocOffset >= 0 && tocOffset <= size-fs {
			return tocOffset, size - fs
		}
	}
	return size, size
}

// maxTOCFile bounds the TOC entry read to show it as a file.
const maxTOCFile = 64 << 20

// readTOCFile returns the tar entry an eStargz blob's TOC is stored as, and its content, if
// [tocOffset, footerOffset) of the blob is a gzip stream holding one, whose content has
// digest tocDigest; nil otherwise (zstd:chunked).
func readTOCFile(ra io.ReaderAt, tocOffset, footerOffset int64, tocDigest digest.Digest) (*tar.Header, []byte) {
	if footerOffset-tocOffset <= 0 || footerOffset-tocOffset > maxTOCFile {
		return nil, nil
	}
	zr, err := gzip.NewReader(io.NewSectionReader(ra, tocOffset, footerOffset-tocOffset))
	if err != nil {
		return nil, nil
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != estargz.TOCTarName || h.Size > maxTOCFile {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxTOCFile))
	if err != nil || tocDigest.Algorithm().FromBytes(data) != tocDigest {
		return nil, nil
	}
	return h, data
}

// Rejecter is implemented by a blob reader whose bytes may come from peers (p2p.BlobReader):
// Reject tells it that the n bytes it gave at off failed their check, so that it drops them,
// sets aside whoever sent them, and reads them from the blob's registry next time. Open and
// ReadAt then read the bytes once more before they report an error.
type Rejecter interface {
	Reject(off, n int64)
}

// Open reads the footer and the TOC of the size-byte blob that ra reads, and checks the TOC
// against tocDigest (see TOCDigest).
func Open(ra io.ReaderAt, size int64, tocDigest digest.Digest) (*Layer, error) {
	if err := tocDigest.Validate(); err != nil {
		return nil, fmt.Errorf("open stargz layer: TOC digest: %w", err)
	}
	l, tail, err := open(ra, size, tocDigest)
	// Only bytes that arrived and failed their check are rejected: a read that failed (the
	// registry, a context) says nothing against whoever sent the others.
	if rj, ok := ra.(Rejecter); ok && err != nil && !tail.readFailed() {
		tail.reject(rj)
		l, _, err = open(ra, size, tocDigest)
	}
	return l, err
}

// open reads the footer and the TOC through a memoReader, which it returns.
func open(ra io.ReaderAt, size int64, tocDigest digest.Digest) (*Layer, *memoReader, error) {
	// The footer and the TOC are read once: estargz reads them, and so do payloadEnd and
	// readTOCFile after it.
	tail := &memoReader{ra: ra}
	r, err := estargz.Open(io.NewSectionReader(tail, 0, size), estargz.WithDecompressors(decompressors()...))
	if err != nil {
		return nil, tail, fmt.Errorf("open stargz layer: %w", err)
	}
	v, err := r.VerifyTOC(tocDigest)
	if err != nil {
		return nil, tail, fmt.Errorf("open stargz layer: %w: %w", layer.ErrDigestMismatch, err)
	}
	tocOffset, footerOffset := payloadEnd(tail, size)
	l := &Layer{blob: ra, payload: tocOffset, r: r, verifier: v, chunks: newChunkCache(chunkCacheBytes)}
	l.tocFile, l.tocData = readTOCFile(tail, tocOffset, footerOffset, tocDigest)
	return l, tail, nil
}

// memoReader remembers what it read from ra and serves a read inside an earlier one from
// memory. Open uses it while it reads the blob's tail.
type memoReader struct {
	ra     io.ReaderAt
	mu     sync.Mutex
	done   []memoRead
	failed bool // a read of ra failed
}

func (m *memoReader) readFailed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

type memoRead struct {
	off  int64
	data []byte
}

func (m *memoReader) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	for _, d := range m.done {
		if off >= d.off && off+int64(len(p)) <= d.off+int64(len(d.data)) {
			n := copy(p, d.data[off-d.off:])
			m.mu.Unlock()
			return n, nil
		}
	}
	m.mu.Unlock()
	n, err := m.ra.ReadAt(p, off)
	m.mu.Lock()
	if n > 0 {
		m.done = append(m.done, memoRead{off: off, data: bytes.Clone(p[:n])})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		m.failed = true
	}
	m.mu.Unlock()
	return n, err
}

// reject rejects every range m read.
func (m *memoReader) reject(rj Rejecter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.done {
		rj.Reject(d.off, int64(len(d.data)))
	}
}

// Lookup returns the TOC entry of path ("" for the root), following hardlinks to the entry
// that holds the content.
func (l *Layer) Lookup(path string) (*estargz.TOCEntry, bool) { return l.r.Lookup(path) }

// ReadAt reads into p the bytes of the regular file at path from offset off, and returns
// how many it read (fewer than len(p) only at the file's end, with io.EOF). Each chunk it
// touches is read whole and checked against its digest first: the error wraps
// layer.ErrDigestMismatch when one does not match.
func (l *Layer) ReadAt(path string, p []byte, off int64) (int, error) {
	e, ok := l.r.Lookup(path)
	if !ok {
		return 0, fmt.Errorf("read %s: %w", path, ErrNotFound)
	}
	if e.Type != "reg" {
		return 0, fmt.Errorf("read %s: a %s, not a regular file", path, e.Type)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", path, off)
	}
	if off >= e.Size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < e.Size {
		ce, ok := l.r.ChunkEntryForOffset(path, off)
		if !ok {
			return n, fmt.Errorf("read %s: no chunk holds offset %d", path, off)
		}
		chunk, err := l.chunk(ce)
		if err != nil {
			return n, fmt.Errorf("read %s: chunk at %d: %w", path, ce.ChunkOffset, err)
		}
		c := copy(p[n:], chunk[off-ce.ChunkOffset:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// chunk returns chunk ce uncompressed and verified, from the chunk cache or the blob. A
// chunk that fails its check is read once more after a Rejecter blob dropped its bytes.
func (l *Layer) chunk(ce *estargz.TOCEntry) ([]byte, error) {
	return l.chunks.get(ce, func() ([]byte, error) {
		chunk, err := l.readVerified(ce)
		if rj, ok := l.blob.(Rejecter); ok && errors.Is(err, layer.ErrDigestMismatch) {
			end := min(ce.NextOffset(), l.payload)
			rj.Reject(ce.Offset, end-ce.Offset)
			chunk, err = l.readVerified(ce)
		}
		return chunk, err
	})
}

func (l *Layer) readVerified(ce *estargz.TOCEntry) ([]byte, error) {
	chunk, err := l.readChunk(ce)
	if err == nil {
		err = l.verify(ce, chunk)
	}
	return chunk, err
}

// readChunk reads the compressed bytes of chunk ce, exactly the range from its offset to the
// next one in the blob (one Range request, not a read-ahead), and returns them uncompressed.
// Each chunk is a gzip member (eStargz) or a zstd frame (zstd:chunked), which may hold the
// chunk after others (InnerOffset). Bytes that do not decompress are, like bytes that do not
// match their digest, an error wrapping layer.ErrDigestMismatch.
func (l *Layer) readChunk(ce *estargz.TOCEntry) ([]byte, error) {
	end := min(ce.NextOffset(), l.payload) // the last chunk's next offset is the blob's end
	if ce.Offset < 0 || end <= ce.Offset || end-ce.Offset > maxCompressedChunk {
		return nil, fmt.Errorf("chunk in the blob at [%d, %d): %w", ce.Offset, end, layer.ErrDigestMismatch)
	}
	compressed := make([]byte, end-ce.Offset)
	if _, err := l.blob.ReadAt(compressed, ce.Offset); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the blob at [%d, %d): %w", ce.Offset, end, err)
	}
	var zr io.Reader
	switch ingest.DetectCompression(compressed) {
	case ingest.Gzip:
		gr, err := gzip.NewReader(bytes.NewReader(compressed))
		if err != nil {
			return nil, fmt.Errorf("chunk at %d: %w: %w", ce.Offset, layer.ErrDigestMismatch, err)
		}
		defer gr.Close()
		zr = gr
	case ingest.Zstd:
		dr, err := zstd.NewReader(bytes.NewReader(compressed), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("chunk at %d: %w", ce.Offset, err)
		}
		defer dr.Close()
		zr = dr
	default:
		return nil, fmt.Errorf("chunk at %d: neither gzip nor zstd: %w", ce.Offset, layer.ErrDigestMismatch)
	}
	if _, err := io.CopyN(io.Discard, zr, ce.InnerOffset); err != nil {
		return nil, fmt.Errorf("chunk at %d: skip %d bytes: %w: %w", ce.Offset, ce.InnerOffset, layer.ErrDigestMismatch, err)
	}
	chunk := make([]byte, ce.ChunkSize)
	if _, err := io.ReadFull(zr, chunk); err != nil {
		return nil, fmt.Errorf("chunk at %d: %w: %w", ce.Offset, layer.ErrDigestMismatch, err)
	}
	return chunk, nil
}

// maxCompressedChunk bounds the compressed bytes read for one chunk, against a TOC that
// names absurd offsets (the TOC is verified, but its writer may be careless).
const maxCompressedChunk = 64 << 20

// verify checks chunk, the uncompressed bytes of ce, against the digest the TOC gives.
func (l *Layer) verify(ce *estargz.TOCEntry, chunk []byte) error {
	v, err := l.verifier.Verifier(ce)
	if err != nil {
		return fmt.Errorf("%w: %w", layer.ErrDigestMismatch, err)
	}
	if _, err := v.Write(chunk); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("%w: the chunk does not match its digest in the TOC", layer.ErrDigestMismatch)
	}
	return nil
}

// chunkCacheBytes bounds the verified chunks a layer keeps: a few of estargz's default 4 MiB.
const chunkCacheBytes = 16 << 20

// BlobRanges returns the ranges of the blob, [start, end) offsets, that hold the chunks of
// the regular file at path: what reading the whole file fetches.
func (l *Layer) BlobRanges(path string) [][2]int64 {
	e, ok := l.r.Lookup(path)
	if !ok || e.Type != "reg" {
		return nil
	}
	var out [][2]int64
	for off := int64(0); off < e.Size; {
		ce, ok := l.r.ChunkEntryForOffset(path, off)
		if !ok || ce.ChunkSize <= 0 {
			break
		}
		out = append(out, [2]int64{ce.Offset, min(ce.NextOffset(), l.payload)})
		off = ce.ChunkOffset + ce.ChunkSize
	}
	return out
}

// PrefetchEnd returns where the files the image's builder marked as read at start end in the
// blob: the offset of the prefetch landmark (.prefetch.landmark), which estargz places after
// them; ok is false when the layer has none.
func (l *Layer) PrefetchEnd() (end int64, ok bool) {
	e, ok := l.r.Lookup(estargz.PrefetchLandmark)
	if !ok || e.Type != "reg" {
		return 0, false
	}
	return e.Offset, true
}

// Prefetch reads, verified, the chunks of the files before the prefetch landmark
// (PrefetchEnd), so that they are at hand when the container reads them: as many as the
// layer's chunk cache holds (chunkCacheBytes), in blob order. It prefetches the files
// Entries listed: call that first.
func (l *Layer) Prefetch(ctx context.Context) error {
	end, ok := l.PrefetchEnd()
	if !ok {
		return nil
	}
	l.mu.Lock()
	extents := l.extents
	l.mu.Unlock()
	var chunks []*estargz.TOCEntry
	for _, x := range extents {
		e, ok := l.r.Lookup(x.name)
		if !ok || e.Offset >= end { // the TOC's own file, or past the landmark
			continue
		}
		for off := int64(0); off < e.Size; {
			ce, ok := l.r.ChunkEntryForOffset(x.name, off)
			if !ok || ce.ChunkSize <= 0 {
				break
			}
			chunks = append(chunks, ce)
			off = ce.ChunkOffset + ce.ChunkSize
		}
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].Offset < chunks[j].Offset })
	var total int64
	for _, ce := range chunks {
		if total += ce.ChunkSize; total > chunkCacheBytes {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := l.chunk(ce); err != nil {
			return fmt.Errorf("prefetch %s: %w", ce.Name, err)
		}
	}
	return nil
}

package stargz

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

const chunkSize = 4096

// file is a regular file of a test layer.
type file struct {
	name string
	data []byte
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// build returns an eStargz blob of files, made with opts, and its TOC digest.
func build(files []file, opts ...estargz.Option) ([]byte, digest.Digest, error) {
	var entries []layertest.File
	for _, f := range files {
		entries = append(entries, layertest.File{Header: tar.Header{Name: f.name, Mode: 0o644, Typeflag: tar.TypeReg}, Data: f.data})
	}
	ts, err := layertest.Tar(entries)
	if err != nil {
		return nil, "", err
	}
	return layertest.EStargz(ts, append([]estargz.Option{estargz.WithChunkSize(chunkSize)}, opts...)...)
}

// buildPlain builds files into an eStargz blob stored, not compressed (gzip level 0), so
// that two layers whose files have the same sizes have the same layout.
func buildPlain(t *testing.T, files []file) ([]byte, digest.Digest) {
	t.Helper()
	blob, toc, err := build(files, estargz.WithCompressionLevel(gzip.NoCompression))
	if err != nil {
		t.Fatal(err)
	}
	return blob, toc
}

// countingReader is an io.ReaderAt over a blob that counts the bytes read from it.
type countingReader struct {
	blob []byte
	mu   sync.Mutex
	read int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := bytes.NewReader(c.blob).ReadAt(p, off)
	c.read += int64(n)
	return n, err
}

func testFiles() []file {
	return []file{
		{"big.bin", randomBytes(1, 64*chunkSize+123)},
		{"etc/small.txt", []byte("hello from a small file\n")},
		{"empty", nil},
	}
}

func TestReadAtReadsOnlyWhatItNeeds(t *testing.T) {
	files := testFiles()
	blob, toc := buildPlain(t, files)
	cr := &countingReader{blob: blob}
	l, err := Open(cr, int64(len(blob)), toc)
	if err != nil {
		t.Fatal(err)
	}
	opened := cr.read
	p := make([]byte, 100)
	n, err := l.ReadAt("etc/small.txt", p, 0)
	if !errors.Is(err, io.EOF) || string(p[:n]) != string(files[1].data) {
		t.Fatalf("small file: got %q, %v; want %q, io.EOF", p[:n], err, files[1].data)
	}
	if got := cr.read - opened; got > 2*chunkSize {
		t.Fatalf("reading a %d-byte file read %d bytes of the %d-byte blob; want at most %d", len(files[1].data), got, len(blob), 2*chunkSize)
	}
	for _, tt := range []struct {
		off, size int
	}{{0, chunkSize}, {chunkSize - 10, 20}, {5*chunkSize + 7, 3 * chunkSize}, {len(files[0].data) - 50, 50}} {
		before := cr.read
		p := make([]byte, tt.size)
		n, err := l.ReadAt("big.bin", p, int64(tt.off))
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("big.bin at %d: %v", tt.off, err)
		}
		if !bytes.Equal(p[:n], files[0].data[tt.off:tt.off+tt.size]) {
			t.Fatalf("big.bin at %d: wrong bytes", tt.off)
		}
		if got, most := cr.read-before, int64(tt.size+2*chunkSize+1024); got > most {
			t.Fatalf("big.bin at %d, %d bytes: read %d bytes of the blob; want at most %d", tt.off, tt.size, got, most)
		}
	}
	if n, err := l.ReadAt("big.bin", make([]byte, 10), int64(len(files[0].data))); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("past the end: got %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := l.ReadAt("nothing", p, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: got %v; want ErrNotFound", err)
	}
}

func TestZstdChunked(t *testing.T) {
	files := testFiles()
	data, toc, err := build(files, estargz.WithCompression(zstdChunked{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault}, &zstdchunked.Decompressor{}}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(bytes.NewReader(data), int64(len(data)), toc)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2*chunkSize)
	if n, err := l.ReadAt("big.bin", p, 7*chunkSize+3); err != nil || !bytes.Equal(p[:n], files[0].data[7*chunkSize+3:9*chunkSize+3]) {
		t.Fatalf("big.bin: got %d bytes, %v; want the file's", n, err)
	}
}

// zstdChunked is the zstd:chunked format for estargz.Build, which wants both halves.
type zstdChunked struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func TestPrefetchReadsWhatTheLandmarkMarks(t *testing.T) {
	files := testFiles()
	blob, toc, err := build(files, estargz.WithPrioritizedFiles([]string{"empty"}))
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{blob: blob}
	l, err := Open(cr, int64(len(blob)), toc)
	if err != nil {
		t.Fatal(err)
	}
	end, ok := l.PrefetchEnd()
	if !ok || end <= 0 || end > int64(len(blob))/2 {
		t.Fatalf("prefetch end %d, %v; want a small prefix of the %d-byte blob", end, ok, len(blob))
	}
	if _, _, err := l.Entries(); err != nil { // as a mount does before it prefetches
		t.Fatal(err)
	}
	before := cr.read
	if err := l.Prefetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := cr.read - before; got > end {
		t.Fatalf("prefetch read %d bytes; want at most the %d before the landmark", got, end)
	}
	before = cr.read
	if n, err := l.ReadAt("empty", make([]byte, 1), 0); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("empty: got %d, %v", n, err)
	}
	// big.bin is after the landmark: reading it reads the blob; reading it again does not.
	p := make([]byte, chunkSize)
	if _, err := l.ReadAt("big.bin", p, 0); err != nil {
		t.Fatal(err)
	}
	afterFirst := cr.read
	if afterFirst == before {
		t.Fatal("reading a file after the landmark read nothing from the blob")
	}
	if _, err := l.ReadAt("big.bin", p[:100], 10); err != nil {
		t.Fatal(err)
	}
	if cr.read != afterFirst {
		t.Fatalf("reading a chunk again read %d more bytes from the blob; want it from the chunk cache", cr.read-afterFirst)
	}
	plain, ptoc := buildPlain(t, files)
	lp, err := Open(bytes.NewReader(plain), int64(len(plain)), ptoc)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lp.PrefetchEnd(); ok {
		t.Fatal("a layer built with no prioritized files has a prefetch landmark")
	}
}

func TestOpenRefusesAnotherTOC(t *testing.T) {
	blob, _ := buildPlain(t, testFiles())
	if _, err := Open(bytes.NewReader(blob), int64(len(blob)), digest.FromString("another TOC")); !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got %v; want ErrDigestMismatch", err)
	}
}

// TestReadAtRefusesAChunkThatDoesNotMatch serves a layer whose TOC is right but whose data
// is another layer's with the same layout: one file differs. Reading it fails; the others
// read right.
func TestReadAtRefusesAChunkThatDoesNotMatch(t *testing.T) {
	files := testFiles()
	good, toc := buildPlain(t, files)
	other := append([]file(nil), files...)
	other[0].data = bytes.Clone(files[0].data)
	other[0].data[3*chunkSize+5] ^= 0xff
	bad, _ := buildPlain(t, other)
	if len(bad) != len(good) {
		t.Fatalf("layouts differ: %d and %d bytes", len(bad), len(good))
	}
	// The data of bad, the TOC and footer of good.
	tocOffset, _, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(good), 0, int64(len(good))))
	if err != nil {
		t.Fatal(err)
	}
	spliced := append(bytes.Clone(bad[:tocOffset]), good[tocOffset:]...)
	l, err := Open(bytes.NewReader(spliced), int64(len(spliced)), toc)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := l.ReadAt("big.bin", p, 3*chunkSize); !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("altered chunk: got %v; want ErrDigestMismatch", err)
	}
	if n, err := l.ReadAt("big.bin", p, 0); err != nil || !bytes.Equal(p[:n], files[0].data[:10]) {
		t.Fatalf("intact chunk: got %q, %v", p[:n], err)
	}
}

func TestTOCDigest(t *testing.T) {
	d := digest.FromString("toc")
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		want        digest.Digest
		ok          bool
	}{
		{"eStargz", map[string]string{estargz.TOCJSONDigestAnnotation: d.String()}, d, true},
		{"zstd:chunked", map[string]string{"io.containers.zstd-chunked.manifest-checksum": d.String()}, d, true},
		{"plain gzip", nil, "", false},
		{"a malformed digest", map[string]string{estargz.TOCJSONDigestAnnotation: "sha256:nope"}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := TOCDigest(ocispec.Descriptor{Annotations: tt.annotations})
			if got != tt.want || ok != tt.ok {
				t.Fatalf("got %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzOpen: a blob of any bytes, however its footer and TOC are mangled, gives an error or
// a layer, never a panic; a layer opened is one whose TOC matched.
func FuzzOpen(f *testing.F) {
	blob, toc, err := build(testFiles()[1:])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob, toc.String())
	f.Add(blob[:len(blob)-10], toc.String())
	f.Add([]byte("not a layer at all"), digest.FromString("x").String())
	f.Fuzz(func(t *testing.T, data []byte, toc string) {
		d, err := digest.Parse(toc)
		if err != nil {
			return
		}
		l, err := Open(bytes.NewReader(data), int64(len(data)), d)
		if err != nil {
			return
		}
		p := make([]byte, 64)
		for _, name := range []string{"big.bin", "etc/small.txt", "empty"} {
			_, _ = l.ReadAt(name, p, 0)
		}
	})
}

// rejectingReader serves blob with the byte at bad flipped, until a Reject covers it, if
// heals; it records the ranges rejected.
type rejectingReader struct {
	blob     []byte
	bad      int64
	heals    bool
	mu       sync.Mutex
	rejected [][2]int64
	healed   bool
}

func (r *rejectingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.blob).ReadAt(p, off)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.healed && r.bad >= off && r.bad < off+int64(n) {
		p[r.bad-off] ^= 0x5a
	}
	return n, err
}

func (r *rejectingReader) Reject(off, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected = append(r.rejected, [2]int64{off, n})
	if r.heals && r.bad >= off && r.bad < off+n {
		r.healed = true
	}
}

// TestRejecterRereadsWhatFailed: a chunk or a TOC that fails its check is rejected to a
// blob reader that can read it again elsewhere (p2p.BlobReader), and read once more; a
// reader that serves the same bytes again gets the error.
func TestRejecterRereadsWhatFailed(t *testing.T) {
	files := testFiles()
	blob, toc := buildPlain(t, files)
	tocOffset, _, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	intact, err := Open(bytes.NewReader(blob), int64(len(blob)), toc)
	if err != nil {
		t.Fatal(err)
	}
	ce, ok := intact.r.ChunkEntryForOffset("big.bin", 3*chunkSize)
	if !ok {
		t.Fatal("no chunk at 3 chunks into big.bin")
	}
	inChunk := ce.Offset + (min(ce.NextOffset(), tocOffset)-ce.Offset)/2
	inTOC := tocOffset + 40
	for _, tc := range []struct {
		name        string
		bad         int64
		heals       bool
		wantOpenErr bool
		wantReadErr bool
	}{
		{"corrupt chunk, then the right bytes", inChunk, true, false, false},
		{"corrupt chunk every time", inChunk, false, false, true},
		{"corrupt TOC, then the right bytes", inTOC, true, false, false},
		{"corrupt TOC every time", inTOC, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := &rejectingReader{blob: blob, bad: tc.bad, heals: tc.heals}
			l, err := Open(rr, int64(len(blob)), toc)
			if tc.wantOpenErr {
				if err == nil {
					t.Fatal("opened a layer whose TOC is corrupt every time it is read")
				}
				if len(rr.rejected) == 0 {
					t.Fatal("the corrupt TOC was not rejected")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, chunkSize)
			_, err = l.ReadAt("big.bin", p, 3*chunkSize)
			if tc.wantReadErr {
				if !errors.Is(err, layer.ErrDigestMismatch) {
					t.Fatalf("got %v; want ErrDigestMismatch", err)
				}
			} else if err != nil || !bytes.Equal(p, files[0].data[3*chunkSize:4*chunkSize]) {
				t.Fatalf("got %v or wrong bytes; want the chunk read again", err)
			}
			covered := false
			for _, r := range rr.rejected {
				covered = covered || tc.bad >= r[0] && tc.bad < r[0]+r[1]
			}
			if !covered {
				t.Fatalf("rejected %v; want a range holding the corrupt byte at %d", rr.rejected, tc.bad)
			}
		})
	}
}

// failingReader fails every read that touches [failFrom, failTo), as a registry that went
// away would, and records what it is told to reject.
type failingReader struct {
	rejectingReader
	failFrom, failTo int64
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off < f.failTo && off+int64(len(p)) > f.failFrom {
		return 0, errors.New("connection reset by peer")
	}
	return f.rejectingReader.ReadAt(p, off)
}

// TestOpenRejectsOnlyBadBytes: a TOC that could not be read because a read failed is not
// blamed on whoever sent the bytes that did arrive.
func TestOpenRejectsOnlyBadBytes(t *testing.T) {
	blob, toc := buildPlain(t, testFiles())
	tocOffset, _, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	// The footer arrives; the TOC before it cannot be read.
	fr := &failingReader{rejectingReader: rejectingReader{blob: blob, bad: -1}, failFrom: tocOffset, failTo: int64(len(blob)) - 64}
	if _, err := Open(fr, int64(len(blob)), toc); err == nil {
		t.Fatal("opened a layer whose TOC could not be read")
	}
	if len(fr.rejected) != 0 {
		t.Errorf("rejected %v after a failed read; want nothing rejected", fr.rejected)
	}
}

package ingest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

const testBlockSize = layer.MinBlockSize

// collector is a BlockSink that keeps every block.
type collector struct {
	mu     sync.Mutex
	blocks [][]byte
}

func (c *collector) WriteBlock(_ context.Context, i int, data []byte, sum layer.BlockDigest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i != len(c.blocks) {
		return errors.New("blocks out of order")
	}
	if layer.DigestBlock(data) != sum {
		return errors.New("sink given a wrong digest")
	}
	c.blocks = append(c.blocks, bytes.Clone(data))
	return nil
}

func (c *collector) stream() []byte { return bytes.Join(c.blocks, nil) }

func mustTar(t testing.TB, files []layertest.File) []byte {
	t.Helper()
	b, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t testing.TB, data []byte) (*layer.Index, *collector) {
	t.Helper()
	sink := &collector{}
	x, err := Build(context.Background(), bytes.NewReader(data), Options{BlockSize: testBlockSize, Sink: sink})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return x, sink
}

func TestCompressionsGiveOneIndex(t *testing.T) {
	raw := mustTar(t, layertest.EveryType())
	want := digest.FromBytes(raw)
	var first []byte
	for _, tc := range []struct {
		name string
		data []byte
		kind Compression
	}{
		{"uncompressed", raw, Uncompressed},
		{"gzip", layertest.Gzip(raw), Gzip},
		{"zstd", layertest.Zstd(raw), Zstd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DetectCompression(tc.data); got != tc.kind {
				t.Fatalf("detected %s, want %s", got, tc.kind)
			}
			x, sink := build(t, tc.data)
			if x.DiffID != want {
				t.Fatalf("diffID %s, want %s", x.DiffID, want)
			}
			if !bytes.Equal(sink.stream(), raw) {
				t.Fatal("blocks do not reassemble into the stream")
			}
			if x.Blocks.Size != int64(len(raw)) || x.Blocks.Count() != len(sink.blocks) {
				t.Fatalf("table: size %d, %d blocks; stream %d bytes, %d blocks", x.Blocks.Size, x.Blocks.Count(), len(raw), len(sink.blocks))
			}
			for i, b := range sink.blocks {
				if err := x.Blocks.Verify(i, b); err != nil {
					t.Fatal(err)
				}
			}
			enc, err := x.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = enc
			} else if !bytes.Equal(enc, first) {
				t.Fatal("index differs between compressions")
			}
		})
	}
}

func TestIndexContents(t *testing.T) {
	raw := mustTar(t, layertest.EveryType())
	x, _ := build(t, raw)
	for _, tc := range []struct {
		name string
		typ  layer.EntryType
		mode uint32
		link string
	}{
		{".", layer.TypeDir, 0o755, ""},
		{"tmp", layer.TypeDir, 0o1777, ""},
		{"bin/tool", layer.TypeRegular, 0o4755, ""},
		{"bin/sh", layer.TypeSymlink, 0, "tool"},
		{"bin/tool-hardlink", layer.TypeHardlink, 0o4755, "bin/tool"},
		{"dev/null", layer.TypeChar, 0o666, ""},
		{"dev/loop7", layer.TypeBlock, 0o660, ""},
		{"tmp/fifo", layer.TypeFifo, 0o620, ""},
		{"var/removed", layer.TypeWhiteout, 0, ""},
		{"gnu/" + strings.Repeat("g", 120), layer.TypeRegular, 0o644, ""},
	} {
		e, ok := x.Lookup(tc.name)
		if !ok {
			t.Fatalf("%q missing from the index", tc.name)
		}
		if e.Type != tc.typ || e.Mode != tc.mode || e.Linkname != tc.link {
			t.Errorf("%q: got %s %o %q, want %s %o %q", tc.name, e.Type, e.Mode, e.Linkname, tc.typ, tc.mode, tc.link)
		}
	}
	if e, _ := x.Lookup("var/cache"); !e.Opaque || e.Implicit {
		t.Errorf("var/cache: opaque %v, implicit %v; want an explicit opaque directory", e.Opaque, e.Implicit)
	}
	if _, ok := x.Lookup("var/.wh.removed"); ok {
		t.Error("whiteout marker listed under its own name")
	}
	if e, _ := x.Lookup("etc/with-xattrs"); e.Xattrs["user.origin"] != "layertest" || e.Xattrs["user.bin"] != "\x00\x01\xff" {
		t.Errorf("xattrs: %q", e.Xattrs)
	}
	if e, _ := x.Lookup("dev/null"); e.DevMajor != 1 || e.DevMinor != 3 {
		t.Errorf("dev/null: %d:%d", e.DevMajor, e.DevMinor)
	}
	for _, e := range x.Entries {
		if e.Type == layer.TypeRegular && !bytes.Equal(raw[e.Offset:e.Offset+e.Size], fileData(t, e.Name)) {
			t.Errorf("%q: data at [%d, +%d) is not the file's", e.Name, e.Offset, e.Size)
		}
	}
}

func fileData(t *testing.T, name string) []byte {
	for _, f := range layertest.EveryType() {
		if n, _ := layer.CleanName(f.Header.Name); n == name {
			return f.Data
		}
	}
	t.Fatalf("no file %q in the test layer", name)
	return nil
}

// TestBlocksArriveBeforeTheStreamEnds shows the property a seed relies on: block k reaches the
// sink while the rest of the layer has not even been written yet.
func TestBlocksArriveBeforeTheStreamEnds(t *testing.T) {
	raw := mustTar(t, layertest.Generated(7, 256<<10, 20))
	pr, pw := io.Pipe()
	firstBlock := make(chan struct{})
	var once sync.Once
	sink := BlockSinkFunc(func(context.Context, int, []byte, layer.BlockDigest) error {
		once.Do(func() { close(firstBlock) })
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := Build(context.Background(), pr, Options{BlockSize: testBlockSize, Sink: sink})
		done <- err
	}()
	half := len(raw) / 2
	if _, err := pw.Write(raw[:half]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstBlock:
	case <-time.After(10 * time.Second):
		t.Fatal("no block reached the sink while half of the layer was still unwritten")
	}
	if _, err := pw.Write(raw[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSinkErrorStopsThePass(t *testing.T) {
	raw := mustTar(t, layertest.Generated(3, 200<<10, 5))
	boom := errors.New("cache full")
	sink := BlockSinkFunc(func(_ context.Context, i int, _ []byte, _ layer.BlockDigest) error {
		if i == 3 {
			return boom
		}
		return nil
	})
	_, err := Build(context.Background(), bytes.NewReader(raw), Options{BlockSize: testBlockSize, Sink: sink})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the sink's error", err)
	}
}

func TestDiffIDMismatch(t *testing.T) {
	raw := mustTar(t, layertest.EveryType())
	_, err := Build(context.Background(), bytes.NewReader(raw), Options{DiffID: digest.FromString("other")})
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrDigestMismatch", err)
	}
	if _, err := Build(context.Background(), bytes.NewReader(raw), Options{DiffID: digest.FromBytes(raw)}); err != nil {
		t.Fatalf("right diffID refused: %v", err)
	}
}

// readTestdata reads a layer made by GNU tar ("tar --sparse --format=posix|gnu" of a file with
// a hole), which Go's tar writer cannot produce.
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hdr(typ byte, name string) tar.Header {
	return tar.Header{Typeflag: typ, Name: name, Mode: 0o644, Format: tar.FormatPAX}
}

func TestRejectsUnsafeAndMalformedLayers(t *testing.T) {
	truncated := mustTar(t, []layertest.File{{Header: hdr(tar.TypeReg, "a"), Data: layertest.Pattern(1, 5000)}})
	for _, tc := range []struct {
		name  string
		data  []byte
		match string
	}{
		{"dot-dot", mustTar(t, []layertest.File{{Header: hdr(tar.TypeReg, "a/../../etc/passwd")}}), `".." component`},
		{"absolute dot-dot", mustTar(t, []layertest.File{{Header: hdr(tar.TypeReg, "/../x")}}), `".." component`},
		{"hardlink to unknown", mustTar(t, []layertest.File{{Header: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "missing", Format: tar.FormatPAX}}}), "not an earlier file"},
		{"hardlink escaping", mustTar(t, []layertest.File{{Header: hdr(tar.TypeReg, "f")}, {Header: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "../f", Format: tar.FormatPAX}}}), `".." component`},
		{"parent is a file", mustTar(t, []layertest.File{{Header: hdr(tar.TypeReg, "f")}, {Header: hdr(tar.TypeReg, "f/g")}}), "not a directory"},
		{"sparse pax", readTestdata(t, "sparse-pax.tar.gz"), "sparse"},
		{"sparse gnu", readTestdata(t, "sparse-gnu.tar.gz"), "sparse"},
		{"symlink without target", mustTar(t, []layertest.File{{Header: hdr(tar.TypeSymlink, "s")}}), "empty target"},
		{"garbage", bytes.Repeat([]byte("not a tar "), 100), "tar header"},
		{"truncated", truncated[:1024], "tar header"},
		{"truncated gzip", layertest.Gzip(truncated)[:200], "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(context.Background(), bytes.NewReader(tc.data), Options{BlockSize: testBlockSize})
			if err == nil {
				t.Fatal("Build accepted the layer")
			}
			if !strings.Contains(err.Error(), tc.match) {
				t.Fatalf("error %q does not say %q", err, tc.match)
			}
			if tc.name != "truncated gzip" && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %q does not wrap ErrMalformed", err)
			}
		})
	}
}

// TestLaterEntriesReplaceEarlierOnes checks extraction semantics for repeated names.
func TestLaterEntriesReplaceEarlierOnes(t *testing.T) {
	files := []layertest.File{
		{Header: hdr(tar.TypeDir, "d/")},
		{Header: hdr(tar.TypeReg, "d/child"), Data: []byte("child")},
		{Header: hdr(tar.TypeReg, "f"), Data: []byte("old")},
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "link1", Linkname: "f", Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "link2", Linkname: "link1", Format: tar.FormatPAX}},
		{Header: hdr(tar.TypeReg, "f"), Data: []byte("new")},
		{Header: hdr(tar.TypeReg, "d"), Data: []byte("now a file")},
		{Header: hdr(tar.TypeReg, "implicit/parent/file"), Data: []byte("x")},
	}
	raw := mustTar(t, files)
	x, _ := build(t, raw)
	read := func(name string) string {
		e, ok := x.Lookup(name)
		if !ok {
			t.Fatalf("%q missing", name)
		}
		e, err := x.Resolve(e)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw[e.Offset : e.Offset+e.Size])
	}
	for name, want := range map[string]string{"f": "new", "link1": "old", "link2": "old", "d": "now a file", "implicit/parent/file": "x"} {
		if got := read(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if _, ok := x.Lookup("d/child"); ok {
		t.Error("d/child survived its directory's replacement")
	}
	if e, _ := x.Lookup("implicit/parent"); e.Type != layer.TypeDir || e.Mode != 0o755 || !e.Implicit {
		t.Errorf("implicit parent: %+v", e)
	}
}

// TestHardlinkHeaderSetsTheSharedInode: as containerd's unpacker does, a hardlink's header
// sets the owner, mode, time and xattrs of the inode it shares with its target.
func TestHardlinkHeaderSetsTheSharedInode(t *testing.T) {
	later := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	raw := mustTar(t, []layertest.File{
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Uid: 1, Gid: 1, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1"}}, Data: []byte("data")},
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "f", Mode: 0o600, Uid: 7, Gid: 8, ModTime: later, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.user.b": "2"}}},
	})
	x, _ := build(t, raw)
	l, _ := x.Lookup("l")
	f, err := x.Resolve(l)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "f" || f.Mode != 0o600 || f.UID != 7 || f.GID != 8 || f.ModTimeSec != later.Unix() ||
		f.Xattrs["user.a"] != "1" || f.Xattrs["user.b"] != "2" {
		t.Fatalf("shared inode: %+v", f)
	}
}

func FuzzBuild(f *testing.F) {
	// Small seeds: the fuzzer minimizes every new interesting input, which takes long on the
	// full test layer's 80 KB.
	files := layertest.EveryType()
	for i := range files {
		files[i].Data = files[i].Data[:min(len(files[i].Data), 16)]
	}
	every, _ := layertest.Tar(files)
	f.Add(every)
	f.Add(layertest.Gzip(every))
	small, _ := layertest.Tar([]layertest.File{{Header: hdr(tar.TypeReg, "a"), Data: []byte("hello")}, {Header: tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a", Format: tar.FormatPAX}}})
	f.Add(small)
	f.Fuzz(func(t *testing.T, data []byte) {
		sink := &collector{}
		x, err := Build(context.Background(), bytes.NewReader(data), Options{BlockSize: testBlockSize, Sink: sink})
		if err != nil {
			return
		}
		if err := x.Validate(); err != nil {
			t.Fatalf("Build returned an invalid index: %v", err)
		}
		stream := sink.stream()
		if int64(len(stream)) != x.Blocks.Size || digest.FromBytes(stream) != x.DiffID {
			t.Fatal("blocks do not match the table")
		}
		enc, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		y, err := layer.Unmarshal(enc)
		if err != nil {
			t.Fatalf("Unmarshal of Marshal: %v", err)
		}
		if enc2, _ := y.Marshal(); !bytes.Equal(enc, enc2) {
			t.Fatal("index does not survive a round trip")
		}
	})
}

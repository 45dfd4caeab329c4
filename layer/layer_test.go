package layer

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestBlockTable(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000) // 10,000 bytes
	const bs = MinBlockSize
	tab := BlockTable{BlockSize: bs, Size: int64(len(data))}
	for i := 0; i < BlockCount(tab.Size, bs); i++ {
		off, n := tab.Range(i)
		tab.Digests = append(tab.Digests, DigestBlock(data[off:off+n]))
	}
	if err := tab.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		i        int
		off, len int64
	}{{0, 0, bs}, {1, bs, bs}, {2, 2 * bs, 10000 - 2*bs}} {
		if off, n := tab.Range(tc.i); off != tc.off || n != tc.len {
			t.Errorf("Range(%d) = %d, %d; want %d, %d", tc.i, off, n, tc.off, tc.len)
		}
	}
	for _, tc := range []struct {
		off, n      int64
		first, last int
	}{{0, 1, 0, 0}, {0, bs, 0, 0}, {bs - 1, 2, 0, 1}, {bs, 1, 1, 1}, {0, 10000, 0, 2}} {
		if f, l := tab.Span(tc.off, tc.n); f != tc.first || l != tc.last {
			t.Errorf("Span(%d, %d) = %d, %d; want %d, %d", tc.off, tc.n, f, l, tc.first, tc.last)
		}
	}
	if err := tab.Verify(1, data[bs:2*bs]); err != nil {
		t.Errorf("good block refused: %v", err)
	}
	bad := bytes.Clone(data[bs : 2*bs])
	bad[10] ^= 1
	for name, b := range map[string][]byte{"flipped bit": bad, "short": data[bs : 2*bs-1], "other block": data[:bs]} {
		if err := tab.Verify(1, b); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("%s: got %v, want ErrDigestMismatch", name, err)
		}
	}
	if err := tab.Verify(3, nil); err == nil {
		t.Error("out-of-range block verified")
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"a/b", "a/b", ""},
		{"./a/b/", "a/b", ""},
		{"/abs/path", "abs/path", ""},
		{"a//b/./c", "a/b/c", ""},
		{"./", RootName, ""},
		{"/", RootName, ""},
		{"a/../b", "", `".."`},
		{"../x", "", `".."`},
		{"/../x", "", `".."`},
		{"a/..", "", `".."`},
		{"a\x00b", "", "NUL"},
	} {
		got, err := CleanName(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrUnsafePath) {
				t.Errorf("CleanName(%q): got %q, %v; want an error saying %s", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// sampleIndex returns a valid index with every entry type.
func sampleIndex() *Index {
	size := int64(3*MinBlockSize + 100)
	x := &Index{
		DiffID: digest.FromString("stream"),
		Blocks: BlockTable{BlockSize: MinBlockSize, Size: size, Digests: make([]BlockDigest, 4)},
		Entries: []Entry{
			{Name: RootName, Type: TypeDir, Mode: 0o755},
			{Name: "bin", Type: TypeDir, Mode: 0o755, ModTimeSec: 1700000000, ModTimeNsec: 5},
			{Name: "bin/tool", Type: TypeRegular, Mode: 0o4755, UID: 1000, GID: 100, Size: 5000, Offset: 512},
			{Name: "bin/sh", Type: TypeSymlink, Mode: 0o777, Linkname: "tool"},
			{Name: "bin/hard", Type: TypeHardlink, Mode: 0o755, Linkname: "bin/tool"},
			{Name: "dev", Type: TypeDir, Mode: 0o755, Opaque: true, Implicit: true},
			{Name: "dev/null", Type: TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 3},
			{Name: "dev/sda", Type: TypeBlock, Mode: 0o660, DevMajor: 8},
			{Name: "dev/fifo", Type: TypeFifo, Mode: 0o600, ModTimeSec: -5},
			{Name: "dev/gone", Type: TypeWhiteout},
			{Name: "bin/x", Type: TypeRegular, Mode: 0o644, Xattrs: map[string]string{"user.a": "1", "user.b": ""}},
		},
	}
	x.Blocks.Digests[2][0] = 7
	return x
}

func TestIndexRoundTrip(t *testing.T) {
	x := sampleIndex()
	enc, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	y, err := Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x.Entries, y.Entries) || !reflect.DeepEqual(x.Blocks, y.Blocks) || x.DiffID != y.DiffID {
		t.Fatalf("round trip changed the index:\n got %+v\nwant %+v", y.Entries, x.Entries)
	}
	if e, ok := y.Lookup("bin/hard"); !ok {
		t.Fatal("lookup failed")
	} else if target, err := y.Resolve(e); err != nil || target.Name != "bin/tool" {
		t.Fatalf("Resolve(bin/hard) = %v, %v", target, err)
	}
	var names []string
	for _, e := range y.Children("dev") {
		names = append(names, e.Name)
	}
	if want := []string{"dev/null", "dev/sda", "dev/fifo", "dev/gone"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("Children(dev) = %q, want %q", names, want)
	}
	d1, _ := x.Digest()
	d2, _ := y.Digest()
	if d1 != d2 {
		t.Fatal("digest changed in a round trip")
	}
}

func TestIndexValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(x *Index)
		want   string
	}{
		{"bad diffID", func(x *Index) { x.DiffID = "sha256:xyz" }, "diffID"},
		{"digest count", func(x *Index) { x.Blocks.Digests = x.Blocks.Digests[:3] }, "block digests"},
		{"tiny block size", func(x *Index) { x.Blocks.BlockSize = 1 }, "block size"},
		{"unclean name", func(x *Index) { x.Entries[2].Name = "bin//tool" }, "not clean"},
		{"dot-dot", func(x *Index) { x.Entries[2].Name = "bin/../tool" }, `".."`},
		{"duplicate", func(x *Index) { x.Entries[3].Name = "bin/tool" }, "duplicate"},
		{"orphan", func(x *Index) { x.Entries[2].Name = "nodir/tool" }, "parent"},
		{"parent is a file", func(x *Index) { x.Entries[3].Name = "bin/tool/sh" }, "parent"},
		{"data past the end", func(x *Index) { x.Entries[2].Offset = x.Blocks.Size - 10 }, "outside"},
		{"negative size", func(x *Index) { x.Entries[2].Size = -1 }, "outside"},
		{"dangling hardlink", func(x *Index) { x.Entries[4].Linkname = "bin/none" }, "hardlink"},
		{"hardlink to dir", func(x *Index) { x.Entries[4].Linkname = "dev" }, "hardlink"},
		{"mode bits", func(x *Index) { x.Entries[2].Mode = 0o170755 }, "mode"},
		{"nanoseconds", func(x *Index) { x.Entries[1].ModTimeNsec = 1e9 }, "nanoseconds"},
		{"opaque file", func(x *Index) { x.Entries[2].Opaque = true }, "opaque"},
		{"implicit file", func(x *Index) { x.Entries[2].Implicit = true }, "implicit"},
		{"unknown type", func(x *Index) { x.Entries[3].Type = 42 }, "unknown entry type"},
		{"dir with data", func(x *Index) { x.Entries[1].Size = 3 }, "with data"},
		{"root not dir", func(x *Index) { x.Entries[0].Type = TypeRegular }, "root"},
		{"link on a file", func(x *Index) { x.Entries[2].Linkname = "x" }, "link target"},
		{"device on a fifo", func(x *Index) { x.Entries[8].DevMajor = 1 }, "device numbers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := sampleIndex()
			tc.mutate(x)
			err := x.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: got %v, want an error about %q", err, tc.want)
			}
			if _, err := x.Marshal(); err == nil {
				t.Fatal("Marshal wrote an invalid index")
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good, err := sampleIndex().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"wrong magic", append([]byte("XXXXXXX"), good[7:]...), "magic"},
		{"future version", append(append([]byte(indexMagic), 9), good[8:]...), "version 9"},
		{"truncated", good[:len(good)-3], "truncated"},
		{"trailing bytes", append(bytes.Clone(good), 0), "trailing"},
		{"huge block count", append([]byte(indexMagic), 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(tc.data)
			if !errors.Is(err, ErrBadIndex) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadIndex about %q", err, tc.want)
			}
		})
	}
}

func FuzzUnmarshal(f *testing.F) {
	good, _ := sampleIndex().Marshal()
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := Unmarshal(data)
		if err != nil {
			if !errors.Is(err, ErrBadIndex) {
				t.Fatalf("error does not wrap ErrBadIndex: %v", err)
			}
			return
		}
		enc, err := x.Marshal()
		if err != nil {
			t.Fatalf("decoded index does not re-encode: %v", err)
		}
		y, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("re-encoded index does not decode: %v", err)
		}
		if !reflect.DeepEqual(x.Entries, y.Entries) || !reflect.DeepEqual(x.Blocks, y.Blocks) {
			t.Fatal("index changed in a round trip")
		}
	})
}

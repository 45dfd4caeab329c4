package stargz

import (
	"archive/tar"
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// TestEntriesMatchTheTarStream: the entries Entries derives from the TOC are those of an
// index of the same blob read as a tar stream (what containerd unpacks), every type
// included, the TOC's own file too; and ReadStreamAt reads each file's bytes at its offset.
func TestEntriesMatchTheTarStream(t *testing.T) {
	mtime := time.Unix(1700000000, 0)
	big := randomBytes(7, 10*chunkSize+17)
	content := map[string][]byte{"etc/a.txt": []byte("alpha\n"), "big.bin": big, "opq/x": []byte("x")}
	var files []layertest.File
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "etc/a.txt", Mode: 0o640, Uid: 1000, Gid: 100, Size: 6,
			PAXRecords: map[string]string{"SCHILY.xattr.user.note": "kept"}},
		{Typeflag: tar.TypeLink, Name: "etc/b.txt", Linkname: "etc/a.txt", Mode: 0o640, Uid: 1000, Gid: 100,
			PAXRecords: map[string]string{"SCHILY.xattr.user.note": "kept"}}, // as tar writers write links
		{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "etc/a.txt", Mode: 0o777},
		{Typeflag: tar.TypeReg, Name: "etc/.wh.gone", Mode: 0o644},
		{Typeflag: tar.TypeDir, Name: "opq/", Mode: 0o700},
		{Typeflag: tar.TypeReg, Name: "opq/.wh..wh..opq", Mode: 0o644},
		{Typeflag: tar.TypeReg, Name: "opq/x", Mode: 0o600, Size: 1},
		{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o600},
		{Typeflag: tar.TypeReg, Name: "big.bin", Mode: 0o644, Size: int64(len(big))},
	} {
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		files = append(files, layertest.File{Header: *h, Data: content[h.Name]})
	}
	ts, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	blob, toc, err := layertest.EStargz(ts, estargz.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}

	want, err := ingest.Build(context.Background(), bytes.NewReader(blob), ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(bytes.NewReader(blob), int64(len(blob)), toc)
	if err != nil {
		t.Fatal(err)
	}
	got, size, err := l.Entries()
	if err != nil {
		t.Fatal(err)
	}
	byName := func(es []layer.Entry) map[string]layer.Entry {
		m := make(map[string]layer.Entry)
		for _, e := range es {
			e.Offset = 0 // the streams differ
			m[e.Name] = e
		}
		return m
	}
	gm, wm := byName(got), byName(want.Entries)
	for name, w := range wm {
		g, ok := gm[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		if g.Type != w.Type || g.Mode != w.Mode || g.UID != w.UID || g.GID != w.GID || g.Size != w.Size ||
			g.Linkname != w.Linkname || g.DevMajor != w.DevMajor || g.DevMinor != w.DevMinor || g.Opaque != w.Opaque ||
			g.ModTimeSec != w.ModTimeSec || len(g.Xattrs) != len(w.Xattrs) || g.Xattrs["user.note"] != w.Xattrs["user.note"] {
			t.Errorf("%s: got %+v; want %+v", name, g, w)
		}
	}
	for name := range gm {
		if _, ok := wm[name]; !ok {
			t.Errorf("%s: not in the tar stream", name)
		}
	}
	var total int64
	for _, e := range got {
		if e.Type != layer.TypeRegular {
			continue
		}
		total += e.Size
		p := make([]byte, e.Size)
		if n, err := l.ReadStreamAt(context.Background(), p, e.Offset); err != nil || int64(n) != e.Size {
			t.Fatalf("%s: read %d bytes, %v", e.Name, n, err)
		}
		if c, ok := content[e.Name]; ok && !bytes.Equal(p, c) {
			t.Errorf("%s: wrong bytes", e.Name)
		}
	}
	if total != size {
		t.Errorf("regular files hold %d bytes; the stream is %d", total, size)
	}
}

package stargz

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

// tocFileName names the extent of the TOC's own file, held in memory: no TOC entry has a
// name with a NUL.
const tocFileName = "\x00" + estargz.TOCTarName

// extent is a regular file's place in the virtual stream.
type extent struct {
	off, size int64
	name      string
}

// Entries returns the layer's entries as an index of its tar stream would list them
// (ingest.Indexer: whiteouts, opaque directories and hardlinks applied), and the size of the
// virtual stream their offsets address: the layer's regular files one after another, which
// ReadStreamAt reads. The TOC lists no entry for its own file, stargz.index.json, which an
// eStargz blob's tar stream ends with: it comes last, as there. The TOC keeps modification
// times to the second (estargz rounds them), so the entries do too.
func (l *Layer) Entries() ([]layer.Entry, int64, error) {
	root, ok := l.r.Lookup("")
	if !ok {
		return nil, 0, fmt.Errorf("stargz layer: no root in the TOC")
	}
	type named struct {
		name string // where the entry is; a hardlink's differs from e.Name, its target's
		e    *estargz.TOCEntry
	}
	var ordered, links []named
	var walk func(dir string, d *estargz.TOCEntry)
	walk = func(dir string, d *estargz.TOCEntry) {
		d.ForeachChild(func(base string, e *estargz.TOCEntry) bool {
			name := path.Join(dir, base)
			if cleanName(e.Name) != name {
				// The TOC resolves a hardlink to its target: list it after every file, so
				// that the target comes first.
				links = append(links, named{name, e})
				return true
			}
			if !implicitDir(e) {
				ordered = append(ordered, named{name, e})
			} // else the Indexer makes it implicit, as the tar stream leaves it
			if e.Type == "dir" {
				walk(name, e)
			}
			return true
		})
	}
	if !implicitDir(root) {
		ordered = append(ordered, named{"", root})
	}
	walk("", root)
	x := ingest.NewIndexer()
	var size int64
	var extents []extent
	for _, n := range append(ordered, links...) {
		e := n.e
		hdr, err := header(e)
		if err != nil {
			return nil, 0, err
		}
		if cleanName(e.Name) != n.name {
			// A hardlink's header carries its target's attributes, as tar writers write it.
			hdr.Typeflag, hdr.Name, hdr.Linkname, hdr.Size = tar.TypeLink, n.name, cleanName(e.Name), 0
		}
		off := size
		if hdr.Typeflag == tar.TypeReg {
			extents = append(extents, extent{off: off, size: e.Size, name: e.Name})
			size += e.Size
		}
		if err := x.Add(hdr, off); err != nil {
			return nil, 0, fmt.Errorf("stargz layer: %w", err)
		}
	}
	if l.tocFile != nil {
		h := *l.tocFile
		extents = append(extents, extent{off: size, size: int64(len(l.tocData)), name: tocFileName})
		if err := x.Add(&h, size); err != nil {
			return nil, 0, fmt.Errorf("stargz layer: %w", err)
		}
		size += int64(len(l.tocData))
	}
	l.mu.Lock()
	l.extents = extents
	l.mu.Unlock()
	return x.Entries(), size, nil
}

// implicitDir reports whether e is a directory the TOC does not list but estargz made for
// entries below it: no modification time, mode 0755, owned by root, no xattrs. (A listed
// directory with exactly those attributes and the epoch as mtime is taken for one too; it
// then shows the attributes of the layers below, or those same defaults.)
func implicitDir(e *estargz.TOCEntry) bool {
	return e.Type == "dir" && e.ModTime3339 == "" && e.Mode&0o7777 == 0o755 && e.UID == 0 && e.GID == 0 && len(e.Xattrs) == 0
}

// cleanName is a TOC entry name as the tree names it: no leading "./" or "/", no trailing
// "/".
func cleanName(name string) string {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	return name
}

// header is the tar header of TOC entry e.
func header(e *estargz.TOCEntry) (*tar.Header, error) {
	var t byte
	switch e.Type {
	case "dir":
		t = tar.TypeDir
	case "reg":
		t = tar.TypeReg
	case "symlink":
		t = tar.TypeSymlink
	case "hardlink":
		t = tar.TypeLink
	case "char":
		t = tar.TypeChar
	case "block":
		t = tar.TypeBlock
	case "fifo":
		t = tar.TypeFifo
	default:
		return nil, fmt.Errorf("stargz layer: entry %q of type %q: %w", e.Name, e.Type, ingest.ErrMalformed)
	}
	name := e.Name
	if name == "" {
		name = "."
	}
	h := &tar.Header{Typeflag: t, Name: name, Linkname: e.LinkName, Mode: e.Mode & 0o7777, Uid: e.UID, Gid: e.GID,
		Uname: e.Uname, Gname: e.Gname, ModTime: e.ModTime(), Devmajor: int64(e.DevMajor), Devminor: int64(e.DevMinor)}
	if t == tar.TypeReg {
		h.Size = e.Size
	}
	for k, v := range e.Xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = make(map[string]string)
		}
		h.PAXRecords["SCHILY.xattr."+k] = string(v)
	}
	return h, nil
}

// ReadStreamAt reads the virtual stream of Entries at off: the bytes of the regular file
// there, each chunk checked against its digest (ReadAt). Entries must have been called.
func (l *Layer) ReadStreamAt(_ context.Context, p []byte, off int64) (int, error) {
	l.mu.Lock()
	extents := l.extents
	l.mu.Unlock()
	n := 0
	for n < len(p) {
		i := sort.Search(len(extents), func(i int) bool { return extents[i].off+extents[i].size > off })
		if i == len(extents) {
			return n, io.EOF
		}
		x := extents[i]
		if off < x.off {
			return n, fmt.Errorf("stargz layer: offset %d is in no file", off)
		}
		want := min(int64(len(p)-n), x.off+x.size-off)
		if x.name == tocFileName {
			m := copy(p[n:n+int(want)], l.tocData[off-x.off:])
			n += m
			off += int64(m)
			continue
		}
		m, err := l.ReadAt(x.name, p[n:n+int(want)], off-x.off)
		n += m
		off += int64(m)
		if err != nil && !(errors.Is(err, io.EOF) && int64(m) == want) {
			return n, err
		}
	}
	return n, nil
}

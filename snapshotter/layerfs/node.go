package layerfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// node is what every inode of the tree answers: attributes, extended attributes, statfs.
// It never changes after creation, so its methods need no locks.
type node struct {
	fs.Inode
	t *tree
	e *layer.Entry // the entry holding the inode: a hardlink's target, never a hardlink
}

var (
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
)

// Getattr returns the entry's attributes.
func (n *node) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.t.fillAttr(n.e, &out.Attr)
	return 0
}

// Getxattr copies the value of attr into dest, or returns its size and ERANGE when dest is
// too small (the kernel asks with an empty dest for the size alone).
func (n *node) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.t.xattr(n.e, attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr copies the NUL-terminated names of the extended attributes into dest, or
// returns their size and ERANGE when dest is too small.
func (n *node) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	list := n.t.xattrList(n.e)
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// Statfs describes the whole layer, whichever node it is asked of.
func (n *node) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.t.statfs(out)
	return 0
}

// dirNode is a directory.
type dirNode struct{ node }

var (
	_ = (fs.NodeLookuper)((*dirNode)(nil))
	_ = (fs.NodeOpendirHandler)((*dirNode)(nil))
)

// Lookup finds a child by name in the index. Names of the tar whiteout form (".wh.*") do
// not exist: whiteouts are looked up by the name they hide.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer d.t.timed(OpLookup, time.Now())
	if hidden(name) {
		return nil, syscall.ENOENT
	}
	e, ok := d.t.x.Lookup(childName(d.e.Name, name))
	if !ok {
		return nil, syscall.ENOENT
	}
	data, err := d.t.resolve(e)
	if err != nil {
		// newTree resolved every hardlink already: this is a bug, not bad input.
		d.t.log.WithError(err).WithField("path", e.Name).Error("layerfs: lookup failed, returning EIO")
		return nil, syscall.EIO
	}
	d.t.fillAttr(data, &out.Attr)
	ops, id := d.t.newNode(data)
	// NewInode makes a new node; if one with the same inode number is known (the same file
	// through another hardlink, or a lookup that raced this one), go-fuse uses that one.
	return d.NewInode(ctx, ops, id), 0
}

// OpendirHandle lists the directory once per open. The kernel may cache the listing
// (FOPEN_CACHE_DIR): it never changes.
func (d *dirNode) OpendirHandle(_ context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	defer d.t.timed(OpReaddir, time.Now())
	entries, err := d.list()
	if err != nil {
		d.t.log.WithError(err).WithField("path", d.e.Name).Error("layerfs: readdir failed, returning EIO")
		return nil, 0, syscall.EIO
	}
	return &dirHandle{entries: entries}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// list returns the directory's entries: ".", "..", then its children in archive order.
// Whiteouts are listed, as the character devices they are presented as.
func (d *dirNode) list() ([]fuse.DirEntry, error) {
	parent := d.e
	if d.e.Name != layer.RootName {
		p, ok := d.t.x.Lookup(layer.ParentName(d.e.Name))
		if !ok {
			return nil, errors.New("no parent directory")
		}
		parent = p
	}
	children := d.t.x.Children(d.e.Name)
	out := make([]fuse.DirEntry, 0, len(children)+2)
	out = append(out,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.t.ino(d.e)},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: d.t.ino(parent)},
	)
	for _, c := range children {
		name := path.Base(c.Name)
		if hidden(name) {
			continue
		}
		data, err := d.t.resolve(c)
		if err != nil {
			return nil, err
		}
		out = append(out, fuse.DirEntry{Name: name, Mode: fileType(data.Type), Ino: d.t.ino(data)})
	}
	return out, nil
}

// dirHandle is one open directory: a fixed listing and a position in it. go-fuse serializes
// the calls on one handle.
type dirHandle struct {
	entries []fuse.DirEntry
	next    int
}

var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
)

// Readdirent returns the next entry, or nil at the end. An entry's offset is the position
// after it, which is what Seekdir takes.
func (h *dirHandle) Readdirent(context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.next >= len(h.entries) {
		return nil, 0
	}
	de := h.entries[h.next]
	h.next++
	de.Off = uint64(h.next)
	return &de, 0
}

// Seekdir moves to position off.
func (h *dirHandle) Seekdir(_ context.Context, off uint64) syscall.Errno {
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

// Releasedir does nothing: the listing is garbage once the handle goes.
func (h *dirHandle) Releasedir(context.Context, uint32) {}

// fileNode is a regular file, whose data is [Offset, Offset+Size) of the layer's stream.
type fileNode struct{ node }

var (
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeReader)((*fileNode)(nil))
)

// Open allows reading only. The kernel keeps the file's pages across opens
// (FOPEN_KEEP_CACHE) and need not tell us about closes (FOPEN_NOFLUSH): the content never
// changes and there is nothing to flush.
func (f *fileNode) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// Read reads the file's bytes at off from the stream, straight into the request's buffer.
func (f *fileNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer f.t.timed(OpRead, time.Now())
	size := f.e.Size
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	want := int(min(int64(len(dest)), size-off))
	n, err := f.t.r.ReadStreamAt(ctx, dest[:want], f.e.Offset+off)
	if n == want {
		return fuse.ReadResultData(dest[:n]), 0 // an error with every byte (io.EOF) is none
	}
	if err == nil {
		err = fmt.Errorf("stream ended after %d of %d bytes at %d", n, want, f.e.Offset+off)
	}
	return nil, f.t.readError(ctx, f.e, off, want, err)
}

// symlinkNode is a symbolic link.
type symlinkNode struct{ node }

var _ = (fs.NodeReadlinker)((*symlinkNode)(nil))

// Readlink returns the target as the layer wrote it.
func (s *symlinkNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	return []byte(s.e.Linkname), 0
}

// specialNode is a character or block device, a fifo, or a whiteout (a 0/0 character
// device). Opening one opens the device or pipe in the kernel, never this server.
type specialNode struct{ node }

package layerfs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// RootIno is the inode number of a layer's root directory: its entry is always the first.
const RootIno = 1

// The xattrs that mark an opaque directory: overlayfs reads the trusted one, or the user one
// when mounted with the userxattr option (WithUserXattr). Only the one overlayfs reads is
// shown: overlayfs hides trusted.overlay.* from containers, but not user.overlay.* unless
// mounted with userxattr.
const (
	opaqueXattr     = "trusted.overlay.opaque"
	userOpaqueXattr = "user.overlay.opaque"
)

// statfsBlockSize is the block size Statfs reports.
const statfsBlockSize = 4096

// tree is what the nodes of one layer share: the index, the reader, and tables computed once
// by newTree. Nothing in it changes afterwards, so nodes read it without locks.
type tree struct {
	x   *layer.Index
	r   StreamReader
	log *log.Entry

	opaqueXattr string // the xattr that marks an opaque directory

	root  *layer.Entry
	pos   map[*layer.Entry]int // an entry's place in x.Entries; its inode number is pos+1
	nlink []uint32             // by place: the names of a file, 2 + subdirectories of a dir

	observe func(op string, took time.Duration) // WithOpObserver, or nil
}

// timed reports how long op took since start, if anyone asked (defer t.timed(op, time.Now())).
func (t *tree) timed(op string, start time.Time) {
	if t.observe != nil {
		t.observe(op, time.Since(start))
	}
}

func newTree(x *layer.Index, r StreamReader, logger *log.Entry, userXattr bool) (*tree, error) {
	t := &tree{
		x:           x,
		r:           r,
		opaqueXattr: opaqueXattr,
		log:         logger.WithField("layer", x.DiffID.String()),
		pos:         make(map[*layer.Entry]int, len(x.Entries)),
		nlink:       make([]uint32, len(x.Entries)),
	}
	if userXattr {
		t.opaqueXattr = userOpaqueXattr
	}
	for i := range x.Entries {
		t.pos[&x.Entries[i]] = i
	}
	if len(x.Entries) == 0 {
		// An empty layer: a root that the index does not list. Its inode number, 1, is free.
		t.root = &layer.Entry{Name: layer.RootName, Type: layer.TypeDir, Mode: 0o755}
		return t, nil
	}
	if x.Entries[0].Name != layer.RootName || x.Entries[0].Type != layer.TypeDir {
		return nil, fmt.Errorf("index entry 0 is %s %q, not the root directory", x.Entries[0].Type, x.Entries[0].Name)
	}
	t.root = &x.Entries[0]
	for i := range x.Entries {
		e := &x.Entries[i]
		switch e.Type {
		case layer.TypeDir:
			t.nlink[i] += 2
			if e.Name != layer.RootName {
				p, ok := x.Lookup(layer.ParentName(e.Name))
				if !ok {
					return nil, fmt.Errorf("index entry %q: no parent directory", e.Name)
				}
				t.nlink[t.pos[p]]++
			}
		case layer.TypeHardlink:
			target, err := x.Resolve(e)
			if err != nil {
				return nil, fmt.Errorf("index entry %q: %w", e.Name, err)
			}
			t.nlink[t.pos[target]]++
		default:
			t.nlink[i]++
		}
	}
	return t, nil
}

// ino returns the inode number of an entry that holds an inode (not a hardlink).
func (t *tree) ino(e *layer.Entry) uint64 {
	if i, ok := t.pos[e]; ok {
		return uint64(i) + 1
	}
	return RootIno // the root of an empty layer
}

// resolve returns the entry holding the inode that name e refers to: a hardlink's target, or
// e itself.
func (t *tree) resolve(e *layer.Entry) (*layer.Entry, error) {
	data, err := t.x.Resolve(e)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", e.Name, err)
	}
	return data, nil
}

// fileType returns the S_IF* bits an entry is presented with.
func fileType(typ layer.EntryType) uint32 {
	switch typ {
	case layer.TypeDir:
		return syscall.S_IFDIR
	case layer.TypeSymlink:
		return syscall.S_IFLNK
	case layer.TypeChar, layer.TypeWhiteout:
		return syscall.S_IFCHR
	case layer.TypeBlock:
		return syscall.S_IFBLK
	case layer.TypeFifo:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

// fillAttr sets the attributes of the inode held by entry e.
func (t *tree) fillAttr(e *layer.Entry, a *fuse.Attr) {
	a.Ino = t.ino(e)
	perm := e.Mode & 0o7777
	if e.Type == layer.TypeSymlink {
		perm = 0o777
	}
	a.Mode = fileType(e.Type) | perm
	a.Nlink = 2 // the root of an empty layer, which the index does not list
	if i, ok := t.pos[e]; ok {
		a.Nlink = t.nlink[i]
	}
	a.Owner = fuse.Owner{Uid: e.UID, Gid: e.GID}
	switch e.Type {
	case layer.TypeRegular:
		a.Size = uint64(e.Size)
	case layer.TypeSymlink:
		a.Size = uint64(len(e.Linkname))
	case layer.TypeChar, layer.TypeBlock:
		// FUSE carries the kernel's 32-bit "new" encoding: major < 4096, minor < 2^20.
		a.Rdev = uint32(unix.Mkdev(e.DevMajor, e.DevMinor))
	}
	sec, nsec := uint64(e.ModTimeSec), e.ModTimeNsec
	a.Mtime, a.Mtimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
}

// overlayPrivate reports whether an xattr is overlayfs metadata. A layer's own xattrs of that
// kind are not shown: overlayfs would take them as its own (redirects, metacopy, origin).
func overlayPrivate(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// xattr returns the value of the extended attribute name of entry e.
func (t *tree) xattr(e *layer.Entry, name string) (string, bool) {
	if overlayPrivate(name) {
		if e.Opaque && name == t.opaqueXattr {
			return "y", true
		}
		return "", false
	}
	v, ok := e.Xattrs[name]
	return v, ok
}

// xattrList returns the names of e's extended attributes as listxattr(2) does: each name
// followed by a NUL byte.
func (t *tree) xattrList(e *layer.Entry) []byte {
	var b []byte
	if e.Opaque {
		b = append(append(b, t.opaqueXattr...), 0)
	}
	keys := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		if !overlayPrivate(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = append(append(b, k...), 0)
	}
	return b
}

// statfs describes the layer: its stream in 4 KiB blocks, none free; its entries as files.
func (t *tree) statfs(out *fuse.StatfsOut) {
	*out = fuse.StatfsOut{
		Blocks:  uint64((t.x.Blocks.Size + statfsBlockSize - 1) / statfsBlockSize),
		Files:   uint64(len(t.x.Entries)),
		Bsize:   statfsBlockSize,
		Frsize:  statfsBlockSize,
		NameLen: 255,
	}
}

// rootNode returns a new node for the root directory.
func (t *tree) rootNode() *dirNode {
	return &dirNode{node: node{t: t, e: t.root}}
}

// newNode returns the node of the inode held by entry e, and its stable attributes.
func (t *tree) newNode(e *layer.Entry) (fs.InodeEmbedder, fs.StableAttr) {
	id := fs.StableAttr{Mode: fileType(e.Type), Ino: t.ino(e)}
	switch e.Type {
	case layer.TypeDir:
		return &dirNode{node: node{t: t, e: e}}, id
	case layer.TypeRegular:
		return &fileNode{node: node{t: t, e: e}}, id
	case layer.TypeSymlink:
		return &symlinkNode{node: node{t: t, e: e}}, id
	}
	return &specialNode{node: node{t: t, e: e}}, id
}

// childName returns the index name of name inside directory dir.
func childName(dir, name string) string {
	if dir == layer.RootName {
		return name
	}
	return dir + "/" + name
}

// hidden reports whether a name is never shown: the whiteout markers of the tar form.
func hidden(name string) bool { return strings.HasPrefix(name, layer.WhiteoutPrefix) }

// readError turns an error of the stream reader into the errno the reading process sees, and
// reports it: the errno is all that crosses the FUSE boundary, so this is the one place the
// error is logged.
func (t *tree) readError(ctx context.Context, e *layer.Entry, off int64, n int, err error) syscall.Errno {
	if ctx.Err() != nil {
		return syscall.EINTR // the reader was interrupted and gave up: nothing failed
	}
	t.log.WithError(err).WithFields(log.Fields{
		"path":   e.Name,
		"offset": off,
		"size":   n,
	}).Error("layerfs: read failed, returning EIO")
	return syscall.EIO
}

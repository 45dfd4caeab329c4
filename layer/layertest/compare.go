//go:build linux

package layertest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// WhiteoutStyle is how a tree on disk presents the whiteouts and opaque directories of a layer.
type WhiteoutStyle int

const (
	// WhiteoutFiles is the tar form, as GNU tar extracts it: a whiteout hiding NAME is an
	// empty regular file ".wh.NAME" beside it; an opaque directory holds an empty
	// ".wh..wh..opq" file.
	WhiteoutFiles WhiteoutStyle = iota
	// WhiteoutOverlay is overlayfs's form: a whiteout is a character device 0/0 named NAME; an
	// opaque directory has the xattrs CompareOptions.OpaqueXattrs set to "y".
	WhiteoutOverlay
)

// DefaultOpaqueXattrs are the xattrs WhiteoutOverlay checks when CompareOptions names none.
var DefaultOpaqueXattrs = []string{"trusted.overlay.opaque"}

// CompareOptions configure CompareTree.
type CompareOptions struct {
	Whiteouts WhiteoutStyle
	// OpaqueXattrs, with WhiteoutOverlay, must read "y" on every opaque directory and be
	// absent from every other entry. They are left out of the comparison of the layer's own
	// xattrs. DefaultOpaqueXattrs when empty.
	OpaqueXattrs []string
	// SkipDirMtimes leaves out the modification times of directories.
	SkipDirMtimes bool
}

// CompareTree checks that the tree at root shows exactly the entries of x, and nothing else:
// file type, mode, owner, mtime, size, content (against stream, the layer's uncompressed
// stream, at the index's offsets), link targets, device numbers, "user." xattrs (the only
// ones a host leaves alone), hardlinks sharing one inode whose link count is the number of
// its names, and whiteouts and opaque directories in the form opts name. Creating such a
// tree needs root, and so does reading trusted xattrs.
func CompareTree(t testing.TB, root string, x *layer.Index, stream []byte, opts CompareOptions) {
	t.Helper()
	c := comparer{t: t, root: root, x: x, stream: stream, opts: opts, links: map[string]uint32{}}
	if opts.Whiteouts == WhiteoutOverlay && len(c.opts.OpaqueXattrs) == 0 {
		c.opts.OpaqueXattrs = DefaultOpaqueXattrs
	}
	for i := range x.Entries {
		if e := &x.Entries[i]; e.Type == layer.TypeHardlink {
			c.links[e.Linkname]++
		}
	}

	onDisk := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		onDisk[rel] = true
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", root, err)
		return
	}

	for i := range x.Entries {
		e := &x.Entries[i]
		diskName := e.Name
		if e.Type == layer.TypeWhiteout && opts.Whiteouts == WhiteoutFiles {
			diskName = filepath.Join(layer.ParentName(e.Name), layer.WhiteoutPrefix+filepath.Base(e.Name))
		}
		if !onDisk[diskName] {
			t.Errorf("%q: in the index, not on disk as %q", e.Name, diskName)
			continue
		}
		delete(onDisk, diskName)
		if e.Opaque && opts.Whiteouts == WhiteoutFiles {
			marker := filepath.Join(e.Name, layer.OpaqueMarker)
			if !onDisk[marker] {
				t.Errorf("%q: opaque in the index, no %s on disk", e.Name, layer.OpaqueMarker)
			}
			delete(onDisk, marker)
		}
		c.compareEntry(e, filepath.Join(root, diskName))
	}
	for name := range onDisk {
		t.Errorf("%q: on disk, missing from the index", name)
	}
}

type comparer struct {
	t      testing.TB
	root   string
	x      *layer.Index
	stream []byte
	opts   CompareOptions
	links  map[string]uint32 // hardlinks to each target
}

var fileTypes = map[layer.EntryType]uint32{
	layer.TypeRegular: unix.S_IFREG, layer.TypeDir: unix.S_IFDIR, layer.TypeSymlink: unix.S_IFLNK,
	layer.TypeChar: unix.S_IFCHR, layer.TypeBlock: unix.S_IFBLK, layer.TypeFifo: unix.S_IFIFO,
}

func (c *comparer) compareEntry(e *layer.Entry, p string) {
	t := c.t
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	if e.Type == layer.TypeWhiteout {
		c.compareWhiteout(e, &st)
		return
	}
	data, err := c.x.Resolve(e)
	if err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	if got, want := st.Mode&unix.S_IFMT, fileTypes[data.Type]; got != want {
		t.Errorf("%q: file type %#o on disk, index says %s (%#o)", e.Name, got, e.Type, want)
		return
	}
	if data.Type != layer.TypeSymlink && st.Mode&0o7777 != data.Mode {
		t.Errorf("%q: mode %#o on disk, %#o in the index", e.Name, st.Mode&0o7777, data.Mode)
	}
	if st.Uid != data.UID || st.Gid != data.GID {
		t.Errorf("%q: owner %d:%d on disk, %d:%d in the index", e.Name, st.Uid, st.Gid, data.UID, data.GID)
	}
	if (data.Type != layer.TypeDir || !c.opts.SkipDirMtimes) &&
		(st.Mtim.Sec != data.ModTimeSec || st.Mtim.Nsec != int64(data.ModTimeNsec)) {
		t.Errorf("%q: mtime %d.%09d on disk, %d.%09d in the index", e.Name, st.Mtim.Sec, st.Mtim.Nsec, data.ModTimeSec, data.ModTimeNsec)
	}
	if data.Type != layer.TypeDir {
		if want := 1 + c.links[data.Name]; uint32(st.Nlink) != want {
			t.Errorf("%q: %d links on disk, %d names in the index", e.Name, st.Nlink, want)
		}
	}
	if e.Type == layer.TypeHardlink {
		var target unix.Stat_t
		if err := unix.Lstat(filepath.Join(c.root, e.Linkname), &target); err != nil || target.Ino != st.Ino || target.Dev != st.Dev {
			t.Errorf("%q: not the same inode as %q (%v)", e.Name, e.Linkname, err)
		}
	}
	switch data.Type {
	case layer.TypeRegular:
		c.compareContent(e, data, p, &st)
	case layer.TypeSymlink:
		if got, err := os.Readlink(p); err != nil || got != data.Linkname {
			t.Errorf("%q: link target %q on disk (%v), %q in the index", e.Name, got, err, data.Linkname)
		}
	case layer.TypeChar, layer.TypeBlock:
		if unix.Major(st.Rdev) != data.DevMajor || unix.Minor(st.Rdev) != data.DevMinor {
			t.Errorf("%q: device %d:%d on disk, %d:%d in the index", e.Name, unix.Major(st.Rdev), unix.Minor(st.Rdev), data.DevMajor, data.DevMinor)
		}
	}
	if data.Type != layer.TypeSymlink { // Linux allows no user xattrs on symlinks
		c.compareXattrs(e, data, p)
	}
}

func (c *comparer) compareWhiteout(e *layer.Entry, st *unix.Stat_t) {
	t := c.t
	t.Helper()
	switch c.opts.Whiteouts {
	case WhiteoutFiles:
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
			t.Errorf("%q: whiteout marker is not an empty file (mode %#o, %d bytes)", e.Name, st.Mode, st.Size)
		}
	case WhiteoutOverlay:
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%q: whiteout is not a 0/0 character device (mode %#o, device %d:%d)", e.Name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
}

func (c *comparer) compareContent(e, data *layer.Entry, p string, st *unix.Stat_t) {
	t := c.t
	t.Helper()
	if st.Size != data.Size {
		t.Errorf("%q: size %d on disk, %d in the index", e.Name, st.Size, data.Size)
	}
	content, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	if data.Offset+data.Size > int64(len(c.stream)) {
		t.Errorf("%q: data [%d, +%d) past the %d-byte stream", e.Name, data.Offset, data.Size, len(c.stream))
		return
	}
	if sha256.Sum256(content) != sha256.Sum256(c.stream[data.Offset:data.Offset+data.Size]) {
		t.Errorf("%q: content digest differs from the stream at [%d, +%d)", e.Name, data.Offset, data.Size)
	}
}

func (c *comparer) compareXattrs(e, data *layer.Entry, p string) {
	t := c.t
	t.Helper()
	got, err := Xattrs(p, "user.")
	if err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	want := map[string]string{}
	for k, v := range data.Xattrs {
		if strings.HasPrefix(k, "user.") {
			want[k] = v
		}
	}
	for _, k := range c.opts.OpaqueXattrs {
		delete(got, k)
		delete(want, k)
		v, err := getxattr(p, k)
		switch {
		case data.Opaque && (err != nil || v != "y"):
			t.Errorf("%q: opaque in the index, xattr %s is %q (%v), want \"y\"", e.Name, k, v, err)
		case !data.Opaque && !errors.Is(err, unix.ENODATA):
			t.Errorf("%q: not opaque in the index, xattr %s is %q (%v), want none", e.Name, k, v, err)
		}
	}
	if !equalXattrs(got, want) {
		t.Errorf("%q: user xattrs %q on disk, %q in the index", e.Name, got, want)
	}
}

// Xattrs returns the extended attributes of p (not following a symlink) whose names start
// with prefix.
func Xattrs(p, prefix string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	out := map[string]string{}
	for _, k := range bytes.Split(buf[:n], []byte{0}) {
		if len(k) == 0 || !strings.HasPrefix(string(k), prefix) {
			continue
		}
		v, err := getxattr(p, string(k))
		if err != nil {
			return nil, err
		}
		out[string(k)] = v
	}
	return out, nil
}

// getxattr returns the value of xattr name of p, not following a symlink.
func getxattr(p, name string) (string, error) {
	size, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return "", &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
	}
	v := make([]byte, size)
	n, err := unix.Lgetxattr(p, name, v)
	if err != nil {
		return "", &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
	}
	return string(v[:n]), nil
}

func equalXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

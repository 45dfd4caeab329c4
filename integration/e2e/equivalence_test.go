package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestFilesystemEquivalence: a three-layer image holding every tar entry type, with
// whiteouts, opaque directories and replacements across layers, gives a container the same
// filesystem under p2p, every layer mounted lazily from FUSE, as under containerd's own
// overlayfs snapshotter, which unpacks the same layers: every path, with its type, mode,
// owner, size, content, link target, user xattrs, device numbers, link count, mtime (but of
// directories) and hardlinks.
//
// Both snapshotters' views of the image's top layer are mounted side by side in the test and
// walked: no shell in the container is involved (busybox has no getfattr), so the comparison
// sees exactly what a container's rootfs would, below its writable layer.
func TestFilesystemEquivalence(t *testing.T) {
	env, reg := setupMirror(t, containerdenv.Options{}, true)
	layers := equivalenceLayers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := reg.Push(ctx, "test/equivalence:v1", layers...)
	if err != nil {
		t.Fatal(err)
	}

	// p2p first, so that its layers are mounted lazily before containerd holds any blob.
	for _, sn := range []string{env.SnapshotterName, "overlayfs"} {
		env.Nerdctl(t, "--snapshotter="+sn, "pull", "--quiet", img.Ref)
	}
	p2p := env.SnapshotterClient(t)
	for i := range img.Layers {
		chain := chainID(t, img, i)
		info, err := p2p.Stat(ctx, chain)
		if err != nil {
			t.Fatalf("layer %d: no committed snapshot %s in the daemon: %v", i, chain, err)
		}
		if info.Labels[snapshotter.LabelRemote] != "p2p" {
			t.Fatalf("layer %d was not mounted lazily (labels %v): the comparison would compare overlayfs with itself", i, info.Labels)
		}
	}

	// The image runs under both, and reads a file its second layer replaced.
	for _, sn := range []string{env.SnapshotterName, "overlayfs"} {
		out := env.Nerdctl(t, "--snapshotter="+sn, "run", "--rm", "--net", "none", img.Ref, "sh", "-c", "cat /etc/replaced.conf /opq/new.txt")
		if want := "replaced in layer 2\nnew in layer 2\n"; out != want {
			t.Errorf("%s: the container printed %q, want %q", sn, out, want)
		}
	}

	got, want := views(ctx, t, env, p2p, "equivalence", chainID(t, img, len(img.Layers)-1))
	if len(want) < 100 {
		t.Fatalf("the overlayfs view holds %d paths: not the image", len(want))
	}
	if diffs := compareTrees(got, want); len(diffs) > 0 {
		t.Errorf("the p2p view differs from the overlayfs view (got p2p, want overlayfs):\n%s", strings.Join(diffs, "\n"))
	} else {
		t.Logf("%d paths compared: p2p and overlayfs agree", len(want))
	}
}

// views mounts read-only views of the snapshot top, the daemon's directly and overlayfs's
// through containerd, under keys named after name, and returns what each shows.
func views(ctx context.Context, t *testing.T, env *containerdenv.Env, p2p snapshots.Snapshotter, name, top string) (p2pView, overlayView map[string]*node) {
	t.Helper()
	p2pRoot := mountView(ctx, t, p2p, name+"-view-p2p", top)
	// A gc.root label keeps containerd's garbage collection off the overlayfs view.
	overlayRoot := mountView(env.NamespaceContext(ctx), t, env.ContainerdSnapshotter(t, "overlayfs"), name+"-view-overlayfs", top,
		snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)}))
	return walkTree(t, p2pRoot), walkTree(t, overlayRoot)
}

// mountView creates a read-only view of parent in sn under key, mounts it on a new directory
// and returns that directory. The view is unmounted and removed in cleanup.
func mountView(ctx context.Context, t *testing.T, sn snapshots.Snapshotter, key, parent string, opts ...snapshots.Opt) string {
	t.Helper()
	dir := t.TempDir()
	mounts, err := sn.View(ctx, key, parent, opts...)
	if err != nil {
		t.Fatalf("view %s of %s: %v", key, parent, err)
	}
	t.Cleanup(func() {
		// containerd's garbage collection may have removed a view it never knew (the daemon's).
		if err := sn.Remove(context.WithoutCancel(ctx), key); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("remove view %s: %v", key, err)
		}
	})
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mount view %s (%v): %v", key, mounts, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmount view %s: %v", key, err)
		}
	})
	return dir
}

// node is what the comparison looks at of one path.
type node struct {
	mode     uint32 // type and permission bits
	uid, gid uint32
	size     int64  // regular files and symlinks
	sha256   string // regular files
	link     string // symlinks
	rdev     uint64 // devices
	nlink    uint64 // all but directories
	mtime    unix.Timespec
	xattrs   map[string]string // user.*
	dev, ino uint64            // overlayfs shows each lower layer's files on a device of its own
}

// walkTree lstats every path under root (not following symlinks), reads every regular
// file, and returns them by path relative to root ("." is root).
func walkTree(t *testing.T, root string) map[string]*node {
	t.Helper()
	nodes := map[string]*node{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := &node{mode: st.Mode, uid: st.Uid, gid: st.Gid, dev: st.Dev, ino: st.Ino, mtime: st.Mtim}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			n.size = st.Size
			if n.sha256, err = fileSHA256(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			n.size = st.Size
			if n.link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			n.rdev = st.Rdev
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			n.nlink = st.Nlink
		}
		if n.xattrs, err = layertest.Xattrs(p, "user."); err != nil {
			return err
		}
		nodes[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return nodes
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compareTrees lists every difference of got from want, one line per path and attribute
// ("PATH: ATTRIBUTE GOT, want WANT"), by path.
func compareTrees(got, want map[string]*node) []string {
	var diffs []string
	paths := slices.Sorted(maps.Keys(want))
	for p := range got {
		if want[p] == nil {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	type inode struct{ dev, ino uint64 }
	groups := func(tree map[string]*node) map[inode][]string {
		g := map[inode][]string{}
		for p, n := range tree {
			if n.mode&unix.S_IFMT != unix.S_IFDIR {
				g[inode{n.dev, n.ino}] = append(g[inode{n.dev, n.ino}], p)
			}
		}
		for _, names := range g {
			slices.Sort(names)
		}
		return g
	}
	gotLinks, wantLinks := groups(got), groups(want)
	for _, p := range paths {
		g, w := got[p], want[p]
		switch {
		case g == nil:
			diffs = append(diffs, fmt.Sprintf("%s: missing (overlayfs has a %s)", p, typeName(w.mode)))
			continue
		case w == nil:
			diffs = append(diffs, fmt.Sprintf("%s: extra %s (not under overlayfs)", p, typeName(g.mode)))
			continue
		}
		add := func(what string, gv, wv any) {
			diffs = append(diffs, fmt.Sprintf("%s: %s %v, want %v", p, what, gv, wv))
		}
		if g.mode&unix.S_IFMT != w.mode&unix.S_IFMT {
			diffs = append(diffs, fmt.Sprintf("%s: a %s, want a %s", p, typeName(g.mode), typeName(w.mode)))
			continue
		}
		isDir := w.mode&unix.S_IFMT == unix.S_IFDIR
		if g.mode != w.mode {
			add("mode", fmt.Sprintf("%#o", g.mode&0o7777), fmt.Sprintf("%#o", w.mode&0o7777))
		}
		if g.uid != w.uid || g.gid != w.gid {
			add("owner", fmt.Sprintf("%d:%d", g.uid, g.gid), fmt.Sprintf("%d:%d", w.uid, w.gid))
		}
		if g.size != w.size {
			add("size", g.size, w.size)
		}
		if g.sha256 != w.sha256 {
			add("content sha256", g.sha256, w.sha256)
		}
		if g.link != w.link {
			add("link target", fmt.Sprintf("%q", g.link), fmt.Sprintf("%q", w.link))
		}
		if g.rdev != w.rdev {
			add("device", fmt.Sprintf("%d:%d", unix.Major(g.rdev), unix.Minor(g.rdev)), fmt.Sprintf("%d:%d", unix.Major(w.rdev), unix.Minor(w.rdev)))
		}
		if g.nlink != w.nlink {
			add("link count", g.nlink, w.nlink)
		}
		// Directories' mtimes are left out: containerd stamps the directories it creates
		// for a layer's missing parents with the time of the unpack.
		if !isDir && g.mtime != w.mtime {
			add("mtime", time.Unix(g.mtime.Unix()).UTC().Format(time.RFC3339Nano), time.Unix(w.mtime.Unix()).UTC().Format(time.RFC3339Nano))
		}
		if !maps.Equal(g.xattrs, w.xattrs) {
			add("user xattrs", fmt.Sprintf("%q", g.xattrs), fmt.Sprintf("%q", w.xattrs))
		}
		if !isDir {
			if gl, wl := gotLinks[inode{g.dev, g.ino}], wantLinks[inode{w.dev, w.ino}]; !slices.Equal(gl, wl) {
				add("hardlinked names", gl, wl)
			}
		}
	}
	return diffs
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// Tar entries of the equivalence image.
var equivEpoch = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func eqDir(name string, mode int64, uid int) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: equivEpoch, Format: tar.FormatPAX}}
}

func eqReg(name string, mode int64, uid int, data string) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: equivEpoch.Add(time.Minute), Format: tar.FormatPAX}, Data: []byte(data)}
}

func eqSymlink(name, target string) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: equivEpoch.Add(2 * time.Minute), Format: tar.FormatPAX}}
}

// eqHardlink is a hardlink to target, an earlier eqReg: its header repeats the target's
// metadata, as tars written from a filesystem do (see knownDifferences for one that does not).
func eqHardlink(name string, target layertest.File) layertest.File {
	h := target.Header
	h.Typeflag, h.Name, h.Linkname, h.Size = tar.TypeLink, name, target.Header.Name, 0
	return layertest.File{Header: h}
}

func eqDevice(name string, typ byte, mode int64, major, minor int64) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: typ, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: equivEpoch, Format: tar.FormatPAX}}
}

// eqMarker is a whiteout (".wh.NAME") or opaque marker (".wh..wh..opq") entry.
func eqMarker(name string) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, ModTime: equivEpoch, Format: tar.FormatPAX}}
}

func withXattrs(f layertest.File, kv ...string) layertest.File {
	if f.Header.PAXRecords == nil {
		f.Header.PAXRecords = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Header.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
	}
	return f
}

// equivalenceLayers returns the three layers of the equivalence image. Every whiteout and
// opaque marker of layers 2 and 3 hides content that really is in the layers below.
func equivalenceLayers(t *testing.T) [][]layertest.File {
	t.Helper()
	bb, err := containerdenv.BusyboxLayer("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	// Layer 1: busybox, then every entry type (layertest.EveryType: devices, a fifo, setuid,
	// long names in three tar forms, xattrs, a hardlink, a whiteout and an opaque directory
	// that hide nothing below them), then what layers 2 and 3 change.
	l1 := slices.Clone(bb)
	for _, f := range layertest.EveryType() {
		if f.Header.Name == "bin/sh" { // busybox's sh must stay the shell
			continue
		}
		l1 = append(l1, f)
	}
	linksOrig := eqReg("links/orig", 0o640, 1000, "one inode, three names\n")
	l1 = append(l1,
		// Made opaque by layer 2: all of it hidden, a subdirectory included.
		eqDir("opq/", 0o750, 1000),
		eqReg("opq/a.txt", 0o644, 0, "opq/a.txt of layer 1\n"),
		eqDir("opq/sub/", 0o755, 0),
		eqReg("opq/sub/b.txt", 0o644, 0, "opq/sub/b.txt of layer 1\n"),
		eqSymlink("opq/link", "a.txt"),
		eqDevice("opq/fifo", tar.TypeFifo, 0o600, 0, 0),
		// Whited out by layer 2, the whole tree.
		eqDir("gone/", 0o755, 0),
		eqReg("gone/x", 0o644, 0, "gone/x\n"),
		eqDir("gone/deep/", 0o700, 1000),
		eqReg("gone/deep/y", 0o600, 1000, "gone/deep/y\n"),
		// Whited out and replaced by layer 2.
		eqReg("etc/removed.conf", 0o644, 0, "removed in layer 2\n"),
		withXattrs(eqReg("etc/replaced.conf", 0o644, 0, "replaced in layer 2: layer 1's content\n"), "user.version", "1"),
		eqDir("replace/", 0o755, 0),
		eqDir("replace/dir2file/", 0o755, 0),
		eqReg("replace/dir2file/child", 0o644, 0, "child of a directory that becomes a file\n"),
		eqReg("replace/file2dir", 0o644, 0, "a file that becomes a directory\n"),
		eqSymlink("replace/link2file", "../etc/hostname"),
		eqReg("replace/file2link", 0o755, 0, "a file that becomes a symlink\n"),
		eqDevice("replace/dev2fifo", tar.TypeChar, 0o600, 1, 7),
		// A directory whose mode and owner layer 2 changes, its content merged.
		eqDir("modes/", 0o755, 0),
		eqReg("modes/keep", 0o644, 0, "modes/keep of layer 1\n"),
		eqReg("modes/whited", 0o644, 0, "whited out by layer 3\n"),
		// Three names of one file; layer 2 whites one out, the others stay one inode of
		// link count 3 (the layer's own count, under both snapshotters).
		eqDir("links/", 0o755, 0),
		linksOrig,
		eqHardlink("links/alias", linksOrig),
		eqHardlink("links/alias2", linksOrig),
		// Hidden by layer 2's opaque marker on var/cache (layer 1's own marker hides nothing).
		eqReg("var/cache/stale", 0o644, 0, "hidden by layer 2\n"),
	)

	// Layer 2: whiteouts, an opaque directory, replacements of every kind.
	links2Base := withXattrs(eqReg("links2/base", 0o755, 1000, "hardlinked in layer 2\n"), "user.links", "3")
	l2 := []layertest.File{
		eqDir("opq/", 0o750, 1000),
		eqMarker("opq/.wh..wh..opq"),
		eqReg("opq/new.txt", 0o644, 0, "new in layer 2\n"),
		eqDir("opq/sub/", 0o711, 0),
		eqReg("opq/sub/c.txt", 0o644, 0, "opq/sub/c.txt of layer 2\n"),
		eqMarker(".wh.gone"),
		eqDir("etc/", 0o755, 0),
		eqMarker("etc/.wh.removed.conf"),
		withXattrs(eqReg("etc/replaced.conf", 0o600, 1000, "replaced in layer 2\n"), "user.version", "2", "user.layer", "two"),
		eqDir("replace/", 0o755, 0),
		eqReg("replace/dir2file", 0o644, 0, "a directory in layer 1\n"),
		eqDir("replace/file2dir/", 0o750, 1000),
		eqReg("replace/file2dir/inner", 0o644, 0, "inner\n"),
		eqReg("replace/link2file", 0o644, 0, "a symlink in layer 1\n"),
		eqSymlink("replace/file2link", "/etc/hostname"),
		eqDevice("replace/dev2fifo", tar.TypeFifo, 0o644, 0, 0),
		eqDir("modes/", 0o711, 1000),
		eqReg("modes/added", 0o644, 0, "modes/added of layer 2\n"),
		eqDir("links/", 0o755, 0),
		eqMarker("links/.wh.alias2"),
		eqDir("links2/", 0o755, 0),
		links2Base,
		eqHardlink("links2/hl1", links2Base),
		eqHardlink("links2/hl2", links2Base),
		eqDir("bin/", 0o755, 0),
		// A new file where layer 1's setuid tool was: its hardlink keeps layer 1's inode.
		eqReg("bin/tool", 0o755, 0, "bin/tool of layer 2\n"),
		eqDir("var/", 0o755, 0),
		eqDir("var/cache/", 0o755, 0),
		eqMarker("var/cache/.wh..wh..opq"),
		eqReg("var/cache/l2", 0o644, 0, "var/cache/l2\n"),
		eqDir("dev/", 0o755, 0),
		eqMarker("dev/.wh.loop7"),
		eqDevice("dev/zero", tar.TypeChar, 0o666, 1, 5),
		eqDevice("dev/sda", tar.TypeBlock, 0o660, 8, 0),
		eqDir("tmp/", 0o1777, 0),
		eqDevice("tmp/fifo2", tar.TypeFifo, 0o644, 0, 0),
		withXattrs(eqDir("l2/", 0o751, 1000), "user.dir", "layer 2"),
		eqReg("l2/extra", 0o644, 0, "whited out by layer 3\n"),
		eqReg("l2/keep", 0o644, 0, "l2/keep\n"),
		withXattrs(eqReg("l2/big.bin", 0o644, 0, string(layertest.Pattern(7, 3<<20+17))), "user.big", "yes"),
	}

	// Layer 3: a whiteout of a layer-2 file and of a layer-1 file, in directories it
	// declares, a file in a new deep directory whose parents it does not declare, and a
	// replaced file.
	l3 := []layertest.File{
		eqMarker("l2/.wh.extra"),
		eqDir("modes/", 0o711, 1000),
		eqMarker("modes/.wh.whited"),
		eqReg("new/deep/er/and/deeper/file.txt", 0o644, 0, "deep in layer 3\n"),
		eqDir("opq/", 0o750, 1000),
		eqDir("opq/sub/", 0o711, 0),
		eqReg("opq/sub/c.txt", 0o600, 1000, "opq/sub/c.txt of layer 3\n"),
	}
	return [][]layertest.File{l1, l2, l3}
}

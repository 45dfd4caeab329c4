package ingest

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// TestIndexMatchesGNUTarExtraction extracts the every-type layer with GNU tar and compares
// every entry of the index with what landed on disk: type, mode, owner, size, content digest
// (read from the blocks at the index's offsets), link target, device numbers, xattrs,
// hardlinks sharing an inode, whiteouts and opaque markers. Creating devices and setting
// owners needs root.
func TestIndexMatchesGNUTarExtraction(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: GNU tar creates device nodes and sets owners only as root")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar not installed")
	}
	raw := mustTar(t, layertest.EveryType())
	x, sink := build(t, layertest.Gzip(raw))
	stream := sink.stream()

	root := t.TempDir()
	cmd := exec.Command("tar", "--extract", "--xattrs", "--xattrs-include=*", "--numeric-owner",
		"--same-owner", "--same-permissions", "--directory", root)
	cmd.Stdin = bytes.NewReader(raw)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}

	onDisk := map[string]bool{}
	filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		onDisk[rel] = true
		return nil
	})

	for i := range x.Entries {
		e := &x.Entries[i]
		diskName := e.Name
		if e.Type == layer.TypeWhiteout {
			diskName = filepath.Join(layer.ParentName(e.Name), layer.WhiteoutPrefix+filepath.Base(e.Name))
		}
		if !onDisk[diskName] {
			t.Errorf("%q: in the index, not extracted as %q", e.Name, diskName)
			continue
		}
		delete(onDisk, diskName)
		if e.Opaque {
			marker := filepath.Join(e.Name, layer.OpaqueMarker)
			if !onDisk[marker] {
				t.Errorf("%q: opaque in the index, GNU tar extracted no %s", e.Name, layer.OpaqueMarker)
			}
			delete(onDisk, marker)
		}
		compareEntry(t, x, e, root, diskName, stream)
	}
	for name := range onDisk {
		t.Errorf("%q: extracted by GNU tar, missing from the index", name)
	}
}

func compareEntry(t *testing.T, x *layer.Index, e *layer.Entry, root, diskName string, stream []byte) {
	t.Helper()
	p := filepath.Join(root, diskName)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	wantFmt := map[layer.EntryType]uint32{
		layer.TypeRegular: unix.S_IFREG, layer.TypeDir: unix.S_IFDIR, layer.TypeSymlink: unix.S_IFLNK,
		layer.TypeHardlink: unix.S_IFREG, layer.TypeChar: unix.S_IFCHR, layer.TypeBlock: unix.S_IFBLK,
		layer.TypeFifo: unix.S_IFIFO, layer.TypeWhiteout: unix.S_IFREG,
	}[e.Type]
	if st.Mode&unix.S_IFMT != wantFmt {
		t.Errorf("%q: file type %#o on disk, index says %s", e.Name, st.Mode&unix.S_IFMT, e.Type)
	}
	data, err := x.Resolve(e)
	if err != nil {
		t.Errorf("%q: %v", e.Name, err)
		return
	}
	if e.Type == layer.TypeWhiteout {
		return // GNU tar extracts the marker as an empty file; nothing else to compare
	}
	if e.Type != layer.TypeSymlink && st.Mode&0o7777 != data.Mode {
		t.Errorf("%q: mode %#o on disk, %#o in the index", e.Name, st.Mode&0o7777, data.Mode)
	}
	if st.Uid != data.UID || st.Gid != data.GID {
		t.Errorf("%q: owner %d:%d on disk, %d:%d in the index", e.Name, st.Uid, st.Gid, data.UID, data.GID)
	}
	if e.Type != layer.TypeDir && st.Mtim.Sec != data.ModTimeSec {
		t.Errorf("%q: mtime %d on disk, %d in the index", e.Name, st.Mtim.Sec, data.ModTimeSec)
	}
	switch e.Type {
	case layer.TypeRegular, layer.TypeHardlink:
		content, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%q: %v", e.Name, err)
			return
		}
		if st.Size != data.Size {
			t.Errorf("%q: size %d on disk, %d in the index", e.Name, st.Size, data.Size)
		}
		if sha256.Sum256(content) != sha256.Sum256(stream[data.Offset:data.Offset+data.Size]) {
			t.Errorf("%q: content digest differs from the blocks at [%d, +%d)", e.Name, data.Offset, data.Size)
		}
		if e.Type == layer.TypeHardlink {
			var target unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, e.Linkname), &target); err != nil || target.Ino != st.Ino {
				t.Errorf("%q: not the same inode as %q", e.Name, e.Linkname)
			}
		}
	case layer.TypeSymlink:
		got, err := os.Readlink(p)
		if err != nil || got != e.Linkname {
			t.Errorf("%q: link target %q on disk (%v), %q in the index", e.Name, got, err, e.Linkname)
		}
	case layer.TypeChar, layer.TypeBlock:
		if unix.Major(st.Rdev) != e.DevMajor || unix.Minor(st.Rdev) != e.DevMinor {
			t.Errorf("%q: device %d:%d on disk, %d:%d in the index", e.Name, unix.Major(st.Rdev), unix.Minor(st.Rdev), e.DevMajor, e.DevMinor)
		}
	}
	if e.Type != layer.TypeSymlink {
		if got := diskXattrs(t, p); !equalXattrs(got, data.Xattrs) {
			t.Errorf("%q: xattrs %q on disk, %q in the index", e.Name, got, data.Xattrs)
		}
	}
}

func diskXattrs(t *testing.T, p string) map[string]string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Errorf("listxattr %s: %v", p, err)
		return nil
	}
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(k, "user.") {
			continue // security.* and the like are the host's, not the layer's
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			t.Errorf("getxattr %s %s: %v", p, k, err)
			continue
		}
		out[k] = string(v[:m])
	}
	return out
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

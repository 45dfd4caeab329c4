package layerfs

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// TestImplicitDirectoriesTakeLowerAttributes: a directory the layer leaves implicit shows the
// mode, owner and xattrs of the same directory in the upper-most lower layer that has it, as
// containerd's unpacker creates it; without one, 0755 root.
func TestImplicitDirectoriesTakeLowerAttributes(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, []layertest.File{
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "a/b/f", Mode: 0o644, Format: tar.FormatPAX}, Data: []byte("f")},
	}, layer.MinBlockSize)
	upper, lower := t.TempDir(), t.TempDir()
	// The upper-most lower layer has no "a": the next one does. A whiteout-like file for
	// "a/b" in the upper one would stop the search; here "a/b" exists nowhere below.
	if err := os.Mkdir(filepath.Join(lower, "a"), 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(lower, "a"), 0o750)
	if err := os.Lchown(filepath.Join(lower, "a"), 5, 6); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(lower, "a"), "user.k", []byte("v"), 0); err != nil {
		t.Skipf("the test directory takes no user xattrs: %v", err)
	}
	r, _ := newCacheReader(t, x, stream, 1<<20)
	_, dir := mountLayer(t, x, r, WithLowerDirs([]string{upper, lower}))

	for _, tc := range []struct {
		name     string
		mode     uint32
		uid, gid uint32
		xattr    string
	}{
		{"a", 0o750, 5, 6, "v"},
		{"a/b", 0o755, 0, 0, ""},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, tc.name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != tc.mode || st.Uid != tc.uid || st.Gid != tc.gid {
			t.Errorf("%s: mode %o owner %d:%d; want %o %d:%d", tc.name, st.Mode&0o7777, st.Uid, st.Gid, tc.mode, tc.uid, tc.gid)
		}
		v := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(dir, tc.name), "user.k", v)
		if got := string(v[:max(n, 0)]); (err == nil) != (tc.xattr != "") || got != tc.xattr {
			t.Errorf("%s: user.k = %q (%v); want %q", tc.name, got, err, tc.xattr)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "a/b/f")); err != nil || string(got) != "f" {
		t.Errorf("a/b/f: %q, %v", got, err)
	}
}

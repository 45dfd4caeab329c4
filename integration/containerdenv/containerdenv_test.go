package containerdenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

func TestUnescapeMountPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{`/with\040space`, "/with space"},
		{`/tab\011and\134backslash`, "/tab\tand\\backslash"},
		{`/trailing\04`, `/trailing\04`},
	} {
		if got := unescapeMountPath(tc.in); got != tc.want {
			t.Errorf("unescapeMountPath(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestApplyLayerFiles(t *testing.T) {
	reg := func(name, data string) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, Data: []byte(data)}
	}
	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	files := map[string]string{}
	applyLayerFiles(files, []layertest.File{
		reg("a/one", "1"), reg("a/two", "2"), reg("b/keep", "k"), reg("c/x", "x"), reg("d/y", "y"),
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "b/link", Linkname: "b/keep"}},
	})
	applyLayerFiles(files, []layertest.File{
		reg("a/.wh.one", ""),      // whiteout of a file
		reg("c/.wh..wh..opq", ""), // opaque directory: earlier content hidden
		reg("c/new", "n"),         // added after the marker
		reg("./b/keep", "K"),      // replaced, in "./" form
		reg(".wh.d", ""),          // whiteout of a directory
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "a/two", Linkname: "x"}}, // file replaced by a symlink
	})
	want := map[string]string{"/b/keep": sum("K"), "/b/link": sum("k"), "/c/new": sum("n")}
	if !maps.Equal(files, want) {
		t.Errorf("got %v\nwant %v", files, want)
	}
}

func TestStamps(t *testing.T) {
	dir := t.TempDir()
	g := toolGroups[0]
	if groupPresent(dir, g) {
		t.Fatal("empty directory: group present")
	}
	for _, b := range g.binaries {
		if err := os.WriteFile(filepath.Join(dir, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if groupPresent(dir, g) {
		t.Error("binaries without a stamp: group present")
	}
	if err := writeStamp(dir, g.name, g.version); err != nil {
		t.Fatal(err)
	}
	if err := writeStamp(dir, "nerdctl", "v0.0.1"); err != nil {
		t.Fatal(err)
	}
	if !groupPresent(dir, g) {
		t.Error("stamped group with its binaries: not present")
	}
	if groupPresent(dir, toolGroups[1]) {
		t.Error("group stamped with another version: present")
	}
	if err := writeStamp(dir, g.name, ""); err != nil {
		t.Fatal(err)
	}
	if groupPresent(dir, g) {
		t.Error("dropped stamp: group present")
	}
	if got := readStamps(dir); !maps.Equal(got, map[string]string{"nerdctl": "v0.0.1"}) {
		t.Errorf("stamps %v", got)
	}
}

func TestCheckStatic(t *testing.T) {
	// Go binaries without cgo are static; the test binary may not be, the shell is not.
	if err := checkStatic("/bin/sh"); err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("/bin/sh: got %v; want a refusal naming busybox-static", err)
	}
}

// requireRootAndFUSE skips unless the test can mount.
func requireRootAndFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// mountDeadFUSE mounts a FUSE filesystem at dir and closes its connection at once, as a
// daemon that died would: any access to dir then fails with ENOTCONN.
func mountDeadFUSE(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("p2p-test", dir, "fuse.p2p-test", 0, opts); err != nil {
		unix.Close(fd)
		t.Fatalf("mount fuse: %v", err)
	}
	unix.Close(fd)
	if _, err := os.Stat(dir); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("stat of a dead FUSE mount: %v; want ENOTCONN", err)
	}
}

// makeMounts mounts, under dir, a tmpfs with a dead FUSE mount and a bind mount inside it.
func makeMounts(t *testing.T, dir string) {
	t.Helper()
	tm := filepath.Join(dir, "a", "tmpfs")
	if err := os.MkdirAll(tm, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", tm, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"fuse", "bind", "bind-src"} {
		if err := os.Mkdir(filepath.Join(tm, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(filepath.Join(tm, "bind-src"), filepath.Join(tm, "bind"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	mountDeadFUSE(t, filepath.Join(tm, "fuse"))
}

func TestUnmountAllDetachesEverything(t *testing.T) {
	requireRootAndFUSE(t)
	dir, err := os.MkdirTemp("", "containerdenv-mounts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		UnmountAll(dir)
		os.RemoveAll(dir)
	})
	makeMounts(t, dir)
	mounts, err := MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 3 || mounts[2] != filepath.Join(dir, "a", "tmpfs") {
		t.Fatalf("mounts under %s, deepest first: %v", dir, mounts)
	}
	unmounted, err := UnmountAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(unmounted) == 0 {
		t.Error("nothing unmounted")
	}
	if left, _ := MountsUnder(dir); len(left) > 0 {
		t.Errorf("left mounted: %v", left)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove after unmount: %v", err)
	}
}

func TestSweepStale(t *testing.T) {
	requireRootAndFUSE(t)
	base, err := os.MkdirTemp("", "containerdenv-sweep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		UnmountAll(base)
		os.RemoveAll(base)
	})
	// A directory whose owner is gone, with mounts and a process naming it.
	stale := filepath.Join(base, "1111")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, ownerFile), []byte("999999999 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	makeMounts(t, stale)
	sleeper := exec.Command("sleep", "60", stale+"/containerd.sock")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	t.Cleanup(func() { sleeper.Process.Kill() })

	// A directory of this (live) process, which must stay.
	live := filepath.Join(base, "2222")
	if err := os.Mkdir(live, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeOwner(live); err != nil {
		t.Fatal(err)
	}

	removed, err := SweepStale(base)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{stale}) {
		t.Errorf("removed %v; want [%s]", removed, stale)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("the process naming the stale directory still runs")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale directory: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live directory: %v", err)
	}
}

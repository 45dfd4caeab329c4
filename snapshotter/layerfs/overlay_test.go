package layerfs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// TestOverlayOnTop mounts overlayfs with the FUSE layer as the upper-most lowerdir over a real
// directory, as a container's rootfs is: the layer's whiteout hides a lower file, its opaque
// directory hides a lower directory's contents, its files read through the overlay, and a
// write copies a file up with its xattrs. overlayfs reads the opaque mark from
// trusted.overlay.opaque, or from user.overlay.opaque with the userxattr option and a layer
// mounted WithUserXattr: both work.
func TestOverlayOnTop(t *testing.T) {
	for _, tt := range []struct {
		name, opts string
		layerOpts  []Option
	}{
		{"trusted xattrs", "", nil},
		{"userxattr", ",userxattr", []Option{WithUserXattr()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x, stream, fuseDir, _ := everyTypeMount(t, tt.layerOpts...)
			testOverlay(t, x, stream, fuseDir, tt.opts)
		})
	}
}

func testOverlay(t *testing.T, x *layer.Index, stream []byte, fuseDir, extraOpts string) {
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	for name, data := range map[string]string{
		"var/removed":      "hidden by the layer's whiteout\n",
		"var/kept":         "not hidden\n",
		"var/cache/old":    "hidden by the layer's opaque directory\n",
		"etc/from-below":   "a lower file in a directory both have\n",
		"etc/hostname":     "replaced by the layer\n",
		"lower-only/file":  "a lower directory the layer lacks\n",
		"var/cache/fresh2": "also hidden by the opaque directory\n",
	} {
		p := filepath.Join(lower, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The FUSE layer comes first: the left-most lowerdir is the upper-most layer.
	opts := "lowerdir=" + fuseDir + ":" + lower + ",upperdir=" + upper + ",workdir=" + work + extraOpts
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay (%s): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})

	for _, name := range []string{"var/removed", "var/cache/old", "var/cache/fresh2"} {
		if _, err := os.Lstat(filepath.Join(merged, name)); errnoOf(err) != unix.ENOENT {
			t.Errorf("%s through the overlay: got %v; want ENOENT", name, err)
		}
	}
	for dir, want := range map[string][]string{
		"var":       {"cache", "kept"},
		"var/cache": {"fresh"},
	} {
		ents, err := os.ReadDir(filepath.Join(merged, dir))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %q through the overlay; want %q", dir, got, want)
		}
	}
	for name, want := range map[string]string{
		"var/kept":        "not hidden\n",
		"etc/from-below":  "a lower file in a directory both have\n",
		"lower-only/file": "a lower directory the layer lacks\n",
	} {
		if b, err := os.ReadFile(filepath.Join(merged, name)); err != nil || string(b) != want {
			t.Errorf("%s through the overlay: %q, %v; want %q", name, b, err, want)
		}
	}
	// Every file of the layer reads as the stream holds it.
	for _, name := range []string{"etc/hostname", "bin/tool", "bin/tool-hardlink", "home/user/big.bin", "var/cache/fresh"} {
		e := mustLookup(t, x, name)
		data, err := x.Resolve(e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(merged, name))
		if err != nil || !bytes.Equal(b, stream[data.Offset:data.Offset+data.Size]) {
			t.Errorf("%s through the overlay: %d bytes, %v; want the layer's %d", name, len(b), err, data.Size)
		}
	}

	// A write copies the file up from the FUSE layer, content and xattrs.
	p := filepath.Join(merged, "etc/with-xattrs")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("open for append through the overlay: %v", err)
	}
	if _, err := f.WriteString("appended\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "etc/with-xattrs")); err != nil || string(b) != "xattrs\nappended\n" {
		t.Errorf("copied-up file in the upperdir: %q, %v", b, err)
	}
	got, err := layertest.Xattrs(p, "user.")
	if err != nil {
		t.Fatal(err)
	}
	want := mustLookup(t, x, "etc/with-xattrs").Xattrs
	if len(got) != len(want) || got["user.origin"] != want["user.origin"] || got["user.bin"] != want["user.bin"] {
		t.Errorf("xattrs after copy-up: %q; want %q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(fuseDir, "etc/with-xattrs")); err != nil || string(b) != "xattrs\n" {
		t.Errorf("the layer itself after the write: %q, %v", b, err)
	}
}

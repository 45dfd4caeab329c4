package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// testFiles is the every-type layer plus what layerfs must not get wrong on top: a file with
// mode 0000 (go-fuse shows 0644 unless told not to), a hardlink to a fifo, a nanosecond mtime.
func testFiles() []layertest.File {
	at := time.Date(2024, 5, 17, 10, 30, 0, 123456789, time.UTC)
	return append(layertest.EveryType(),
		layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: "etc/shadow", Mode: 0, ModTime: at, Format: tar.FormatPAX}, Data: []byte("root:*:19000::::::\n")},
		layertest.File{Header: tar.Header{Typeflag: tar.TypeLink, Name: "tmp/fifo-link", Linkname: "tmp/fifo", ModTime: at, Format: tar.FormatPAX}},
	)
}

// everyTypeMount mounts the test layer with blocks of the smallest size, so files span
// blocks, served through a block cache.
func everyTypeMount(t *testing.T, opts ...Option) (x *layer.Index, stream []byte, dir string, r cacheReader) {
	t.Helper()
	requireFUSE(t)
	x, stream = buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ = newCacheReader(t, x, stream, 1<<20)
	_, dir = mountLayer(t, x, r, opts...)
	return x, stream, dir, r
}

// TestMountShowsTheIndex mounts the every-type layer and checks the tree against the index
// with layertest.CompareTree, whiteouts as 0/0 character devices and opaque directories by
// xattr, after checking that metadata alone reads no block.
func TestMountShowsTheIndex(t *testing.T) {
	x, stream, dir, r := everyTypeMount(t)

	// Listing and stat'ing every name touches the index only.
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		_, err = os.Lstat(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.cache.Stats(); s.Misses != 0 || s.Fills != 0 {
		t.Errorf("metadata reads fetched blocks: %+v", s)
	}

	layertest.CompareTree(t, dir, x, stream, layertest.CompareOptions{
		Whiteouts:    layertest.WhiteoutOverlay,
		OpaqueXattrs: []string{"trusted.overlay.opaque"},
	})

	// Inode numbers are stable: entry index + 1, a hardlink's that of its target.
	for i := range x.Entries {
		e := &x.Entries[i]
		data, err := x.Resolve(e)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(i) + 1
		if data != e {
			want = uint64(indexOf(x, data)) + 1
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name), &st); err != nil {
			t.Errorf("%q: %v", e.Name, err)
		} else if st.Ino != want {
			t.Errorf("%q: inode %d, want %d", e.Name, st.Ino, want)
		}
	}
}

func indexOf(x *layer.Index, e *layer.Entry) int {
	for i := range x.Entries {
		if &x.Entries[i] == e {
			return i
		}
	}
	return -1
}

// TestCompareTreeCatchesDifferences makes sure the comparison that the other tests rely on
// fails when the tree and the index differ.
func TestCompareTreeCatchesDifferences(t *testing.T) {
	x, stream, dir, _ := everyTypeMount(t)
	tests := []struct {
		name   string
		mutate func(x *layer.Index, stream []byte)
		want   string
	}{
		{"mode", func(x *layer.Index, _ []byte) { mustLookup(t, x, "etc/hostname").Mode = 0o600 }, "mode"},
		{"owner", func(x *layer.Index, _ []byte) { mustLookup(t, x, "home/user").UID = 7 }, "owner"},
		{"content", func(x *layer.Index, s []byte) { s[mustLookup(t, x, "bin/tool").Offset+5000] ^= 1 }, "content"},
		{"device", func(x *layer.Index, _ []byte) { mustLookup(t, x, "dev/null").DevMinor = 4 }, "device"},
		{"xattr", func(x *layer.Index, _ []byte) { mustLookup(t, x, "etc/with-xattrs").Xattrs["user.origin"] = "?" }, "xattrs"},
		{"opaque", func(x *layer.Index, _ []byte) { mustLookup(t, x, "var/cache").Opaque = false }, "opaque"},
		{"missing", func(x *layer.Index, _ []byte) { mustLookup(t, x, "etc/empty").Name = "etc/gone" }, "missing from the index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := &layer.Index{DiffID: x.DiffID, Blocks: x.Blocks, Entries: cloneEntries(x.Entries)}
			s := bytes.Clone(stream)
			tt.mutate(y, s)
			rec := &recorder{TB: t}
			layertest.CompareTree(rec, dir, y, s, layertest.CompareOptions{
				Whiteouts:    layertest.WhiteoutOverlay,
				OpaqueXattrs: []string{"trusted.overlay.opaque"},
			})
			if !strings.Contains(strings.Join(rec.errs, "\n"), tt.want) {
				t.Errorf("got errors %q; want one about %q", rec.errs, tt.want)
			}
		})
	}
}

func mustLookup(t *testing.T, x *layer.Index, name string) *layer.Entry {
	t.Helper()
	e, ok := x.Lookup(name)
	if !ok {
		t.Fatalf("%q not in the index", name)
	}
	return e
}

func cloneEntries(in []layer.Entry) []layer.Entry {
	out := make([]layer.Entry, len(in))
	for i, e := range in {
		if e.Xattrs != nil {
			xa := make(map[string]string, len(e.Xattrs))
			for k, v := range e.Xattrs {
				xa[k] = v
			}
			e.Xattrs = xa
		}
		out[i] = e
	}
	return out
}

// recorder collects the errors reported to it instead of failing the test.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestNamesAndAttributes checks what CompareTree does not: no ".wh." name is listed or can
// be looked up, xattr size queries and ERANGE, statfs, the readahead, and the mount's entry
// in /proc/self/mountinfo.
func TestNamesAndAttributes(t *testing.T) {
	x, _, dir, _ := everyTypeMount(t)

	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), layer.WhiteoutPrefix) {
			t.Errorf("%s: a whiteout marker name is listed", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"var/.wh.removed", "var/cache/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); errnoOf(err) != unix.ENOENT {
			t.Errorf("lstat %s: got %v; want ENOENT", name, err)
		}
	}
	f, err := os.Open(filepath.Join(dir, "var"))
	if err != nil {
		t.Fatal(err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names, ","), "cache,removed"; got != want {
		t.Errorf("var lists %s; want %s", got, want)
	}

	// xattrs: a size query, a buffer too small, a missing name.
	p := filepath.Join(dir, "etc/with-xattrs")
	if n, err := unix.Getxattr(p, "user.origin", nil); err != nil || n != len("layertest") {
		t.Errorf("getxattr size: got %d, %v; want %d", n, err, len("layertest"))
	}
	if _, err := unix.Getxattr(p, "user.origin", make([]byte, 3)); err != unix.ERANGE {
		t.Errorf("getxattr into 3 bytes: got %v; want ERANGE", err)
	}
	if _, err := unix.Getxattr(p, "user.missing", make([]byte, 64)); err != unix.ENODATA {
		t.Errorf("getxattr of a missing name: got %v; want ENODATA", err)
	}
	if _, err := unix.Listxattr(p, make([]byte, 3)); err != unix.ERANGE {
		t.Errorf("listxattr into 3 bytes: got %v; want ERANGE", err)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "etc"), "trusted.overlay.opaque", make([]byte, 8)); err != unix.ENODATA {
		t.Errorf("opaque xattr of a plain directory: got %v; want ENODATA", err)
	}

	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(dir, "etc/hostname"), &st); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	if want := (x.Blocks.Size + 4095) / 4096; st.Bsize != 4096 || int64(st.Blocks) != want || st.Bfree != 0 {
		t.Errorf("statfs: bsize %d, %d blocks, %d free; want 4096, %d, 0", st.Bsize, st.Blocks, st.Bfree, want)
	}
	if st.Files != uint64(len(x.Entries)) || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: %d files, flags %#x; want %d files, read-only", st.Files, st.Flags, len(x.Entries))
	}

	var dst unix.Stat_t
	if err := unix.Stat(dir, &dst); err != nil {
		t.Fatal(err)
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dst.Dev), unix.Minor(dst.Dev))
	if b, err := os.ReadFile(bdi); err != nil || strings.TrimSpace(string(b)) != "1024" {
		t.Errorf("%s: %q, %v; want 1024", bdi, b, err)
	}

	fstype, source, options, ok := mountInfo(t, dir)
	if !ok || fstype != "fuse.p2p" || source != "p2p:test" || !strings.HasPrefix(options, "ro,") ||
		!strings.Contains(options, "default_permissions") || !strings.Contains(options, "allow_other") {
		t.Errorf("mountinfo: %q %q %q (found %v); want fuse.p2p from p2p:test, ro, default_permissions, allow_other", fstype, source, options, ok)
	}
}

// TestWritesFail checks that every kind of change is refused with EROFS.
func TestWritesFail(t *testing.T) {
	_, _, dir, _ := everyTypeMount(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name string
		op   func() error
	}{
		{"write", func() error { return os.WriteFile(p("etc/hostname"), []byte("x"), 0o644) }},
		{"create", func() error { _, err := os.Create(p("etc/new")); return err }},
		{"mkdir", func() error { return os.Mkdir(p("etc/newdir"), 0o755) }},
		{"remove", func() error { return os.Remove(p("etc/hostname")) }},
		{"rename", func() error { return os.Rename(p("etc/hostname"), p("etc/renamed")) }},
		{"symlink", func() error { return os.Symlink("x", p("etc/link")) }},
		{"chmod", func() error { return os.Chmod(p("etc/hostname"), 0o600) }},
		{"truncate", func() error { return os.Truncate(p("etc/hostname"), 0) }},
		{"setxattr", func() error { return unix.Setxattr(p("etc/hostname"), "user.x", []byte("y"), 0) }},
		{"mknod", func() error { return unix.Mknod(p("dev/zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))) }},
	}
	for _, tt := range tests {
		if err := tt.op(); errnoOf(err) != unix.EROFS {
			t.Errorf("%s: got %v; want EROFS", tt.name, err)
		}
	}
	if b, err := os.ReadFile(p("etc/hostname")); err != nil || string(b) != "layertest\n" {
		t.Errorf("etc/hostname after the writes: %q, %v", b, err)
	}
}

// failingReader fails every read that touches [from, to) of the stream while broken is set.
type failingReader struct {
	StreamReader
	from, to int64
	broken   atomic.Bool
}

var errBlockUnavailable = errors.New("block unavailable from every peer")

func (r *failingReader) ReadStreamAt(ctx context.Context, p []byte, off int64) (int, error) {
	if r.broken.Load() && off < r.to && off+int64(len(p)) > r.from {
		return 0, fmt.Errorf("read stream at %d: %w", off, errBlockUnavailable)
	}
	return r.StreamReader.ReadStreamAt(ctx, p, off)
}

// TestReaderErrorIsEIO checks that a failing read reaches the reading process as EIO, that
// the rest of the layer stays readable, and that nothing of the failure stays cached: once
// the reader recovers, the same reads succeed.
func TestReaderErrorIsEIO(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ := newCacheReader(t, x, stream, 1<<20)
	bad := mustLookup(t, x, "home/user/big.bin")
	fr := &failingReader{StreamReader: r, from: bad.Offset + 20_000, to: bad.Offset + 20_001}
	fr.broken.Store(true)
	_, dir := mountLayer(t, x, fr)
	p := filepath.Join(dir, bad.Name)
	want := stream[bad.Offset : bad.Offset+bad.Size]

	for _, flags := range [][]string{nil, {"iflag=direct"}} {
		cmd := exec.Command("dd", append([]string{"if=" + p, "of=/dev/null", "bs=1M", "status=none"}, flags...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Input/output error") {
			t.Errorf("dd %v of a file with a failing block: %v, %q; want an input/output error", flags, err, out)
		}
	}
	if _, err := os.ReadFile(p); errnoOf(err) != unix.EIO {
		t.Errorf("read: got %v; want EIO", err)
	}
	// The start of the file, before the failing range, and other files still read.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, want[:4096]) {
		t.Errorf("first page of %s: %v", bad.Name, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin/tool")); err != nil || len(b) != 3*4096+123 {
		t.Errorf("bin/tool: %d bytes, %v", len(b), err)
	}

	fr.broken.Store(false)
	out := filepath.Join(t.TempDir(), "copy")
	for _, flags := range [][]string{nil, {"iflag=direct"}} {
		dd(t, p, out, flags...)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
			t.Errorf("dd %v once the reader works again: %d bytes that differ from the stream (%v)", flags, len(got), err)
		}
	}
}

// blockingReader blocks reads of [from, to) until their context ends.
type blockingReader struct {
	StreamReader
	from, to int64
	entered  chan struct{}
	returned chan error
}

func (r *blockingReader) ReadStreamAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < r.to && off+int64(len(p)) > r.from {
		r.entered <- struct{}{}
		<-ctx.Done()
		r.returned <- ctx.Err()
		return 0, ctx.Err()
	}
	return r.StreamReader.ReadStreamAt(ctx, p, off)
}

// TestInterruptedReadEnds kills a process whose read waits on the reader: the kernel sends an
// interrupt, the read's context ends, and the server answers, so neither the process nor the
// server goroutine hangs.
func TestInterruptedReadEnds(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ := newCacheReader(t, x, stream, 1<<20)
	e := mustLookup(t, x, "home/user/big.bin")
	br := &blockingReader{StreamReader: r, from: e.Offset, to: e.Offset + e.Size,
		entered: make(chan struct{}, 16), returned: make(chan error, 16)}
	_, dir := mountLayer(t, x, br)

	cmd := exec.Command("dd", "if="+filepath.Join(dir, e.Name), "of=/dev/null", "bs=64k", "iflag=direct", "status=none")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-br.entered:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("dd's read never reached the reader")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-br.returned:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("blocked read ended with %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked read's context did not end after the reader was killed")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("dd: %v; want killed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dd did not exit after SIGKILL")
	}
}

// TestBigFile reads a file of many 1 MiB blocks with dd, direct and through the page cache,
// through a block cache that holds a third of it, and compares it with the stream.
// BenchmarkRead measures the same reads.
func TestBigFile(t *testing.T) {
	requireFUSE(t)
	const size = 48 << 20
	x, stream := buildLayer(t, layertest.Generated(7, size, 50), layer.DefaultBlockSize)
	r, cache := newCacheReader(t, x, stream, 16<<20)
	_, dir := mountLayer(t, x, r)
	e := mustLookup(t, x, "data/large.bin")
	want := stream[e.Offset : e.Offset+e.Size]
	p := filepath.Join(dir, e.Name)

	out := filepath.Join(t.TempDir(), "copy")
	for _, run := range []struct {
		name  string
		flags []string
	}{
		{"direct", []string{"iflag=direct"}},
		{"page cache", nil},
		{"page cache again", nil},
	} {
		dd(t, p, out, run.flags...)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: dd read %d bytes that differ from the %d of the stream (%v)", run.name, len(got), len(want), err)
		}
	}
	if s := cache.Stats(); s.Evictions == 0 {
		t.Errorf("a %d MiB file through a 16 MiB cache evicted nothing: %+v", size>>20, s)
	}
}

// TestUnmount checks that Unmount fails while the mount is busy and leaves it mounted, then
// leaves no mount behind, that Wait returns, and that a second Unmount does nothing.
func TestUnmount(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ := newCacheReader(t, x, stream, 1<<20)
	dir := t.TempDir()
	m, err := Mount(context.Background(), dir, x, r, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	waited := make(chan struct{})
	go func() { m.Wait(); close(waited) }()
	if _, _, _, ok := mountInfo(t, dir); !ok {
		t.Fatal("not in mountinfo after Mount")
	}

	f, err := os.Open(filepath.Join(dir, "etc/hostname"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Unmount with a file open: got %v; want EBUSY", err)
	}
	if _, _, _, ok := mountInfo(t, dir); !ok {
		t.Fatal("not in mountinfo after a failed Unmount")
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "layertest\n" {
		t.Errorf("read after a failed Unmount: %q, %v", b, err)
	}
	f.Close()

	if err := m.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if _, _, _, ok := mountInfo(t, dir); ok {
		t.Error("still in mountinfo after Unmount")
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("Wait did not return after Unmount")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
}

// TestUnmountedByOthers checks that Wait returns when someone else unmounts the layer, and
// that Unmount then does nothing.
func TestUnmountedByOthers(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ := newCacheReader(t, x, stream, 1<<20)
	m, dir := mountLayer(t, x, r)
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { m.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after umount(2)")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount after umount(2): %v", err)
	}
}

// TestMountEdgeCases checks the errors of Mount that need no kernel, and an index with no
// entries at all, which still has a root.
func TestMountEdgeCases(t *testing.T) {
	requireFUSE(t)
	x, stream := buildLayer(t, testFiles(), layer.MinBlockSize)
	r, _ := newCacheReader(t, x, stream, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Mount(ctx, t.TempDir(), x, r); !errors.Is(err, context.Canceled) {
		t.Errorf("Mount with a cancelled context: got %v; want context.Canceled", err)
	}
	if _, err := Mount(context.Background(), filepath.Join(t.TempDir(), "missing"), x, r, WithLogger(quietLogger())); err == nil {
		t.Error("Mount on a missing directory succeeded")
	}
	noRoot := &layer.Index{DiffID: x.DiffID, Blocks: x.Blocks, Entries: x.Entries[1:]}
	if _, err := NewRoot(noRoot, r); err == nil {
		t.Error("NewRoot of an index whose first entry is not the root succeeded")
	}

	empty := &layer.Index{DiffID: x.DiffID, Blocks: layer.BlockTable{BlockSize: layer.MinBlockSize}}
	_, dir := mountLayer(t, empty, r)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil || st.Mode != unix.S_IFDIR|0o755 || st.Ino != RootIno || st.Nlink != 2 {
		t.Errorf("root of an empty layer: mode %#o, inode %d, %d links, %v; want a 0755 directory, inode %d, 2 links", st.Mode, st.Ino, st.Nlink, err, RootIno)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("empty layer lists %v, %v", ents, err)
	}
}

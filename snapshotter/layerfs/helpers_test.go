package layerfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// requireFUSE skips the test unless it can mount FUSE filesystems: root and /dev/fuse.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE filesystems (allow_other, device nodes, owners)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
}

// buildLayer indexes the uncompressed tar of files, which is then the layer's stream.
func buildLayer(t testing.TB, files []layertest.File, blockSize int64) (*layer.Index, []byte) {
	t.Helper()
	stream, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ingest.Build(context.Background(), bytes.NewReader(stream), ingest.Options{BlockSize: blockSize})
	if err != nil {
		t.Fatalf("ingest.Build: %v", err)
	}
	return x, stream
}

// cacheReader is the adapter a caller writes: a block cache bound to one task and its filler.
type cacheReader struct {
	cache *blockcache.Cache
	task  layer.TaskID
	fill  blockcache.Filler
}

func (r cacheReader) ReadStreamAt(ctx context.Context, p []byte, off int64) (int, error) {
	return r.cache.ReadStreamAt(ctx, r.task, r.fill, p, off)
}

// newCacheReader serves x's stream from memory through a block cache, verifying every block
// against the block table as a real filler does.
func newCacheReader(t testing.TB, x *layer.Index, stream []byte, limit int64) (cacheReader, *blockcache.Cache) {
	t.Helper()
	cache, err := blockcache.New(limit, blockcache.WithBlockSize(int(x.Blocks.BlockSize)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	fill := blockcache.FillerFunc(func(_ context.Context, key layer.BlockKey, buf []byte) (int, error) {
		off, n := x.Blocks.Range(key.Index)
		copy(buf, stream[off:off+n])
		if err := x.Blocks.Verify(key.Index, buf[:n]); err != nil {
			return 0, err
		}
		return int(n), nil
	})
	return cacheReader{cache: cache, task: x.Task(), fill: fill}, cache
}

// quietLogger discards what the filesystem logs, so expected failures do not clutter the
// test output.
func quietLogger() *log.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// mountLayer mounts x in a new temporary directory and unmounts it when the test ends, lazily
// if it must, so no mount outlives the test.
func mountLayer(t testing.TB, x *layer.Index, r StreamReader, opts ...Option) (*Mounted, string) {
	t.Helper()
	dir := t.TempDir()
	opts = append([]Option{WithLogger(quietLogger()), WithFSName("p2p:test")}, opts...)
	m, err := Mount(context.Background(), dir, x, r, opts...)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount of %s: %v", dir, err)
			}
		}
	})
	return m, dir
}

// mountInfo returns the mount of dir from /proc/self/mountinfo: its filesystem type, source
// and options, and whether dir is a mount point at all.
func mountInfo(t testing.TB, dir string) (fstype, source, options string, ok bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i := 6; i+3 < len(fields); i++ {
			if fields[i] == "-" {
				fstype, source, options, ok = fields[i+1], fields[i+2], fields[5]+","+fields[i+3], true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fstype, source, options, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo fields.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// dd copies path to out with dd(1) at bs=1M, with extra flags, and returns how long it took.
func dd(t testing.TB, path, out string, flags ...string) time.Duration {
	t.Helper()
	cmd := exec.Command("dd", append([]string{"if=" + path, "of=" + out, "bs=1M", "status=none"}, flags...)...)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dd %s %v: %v: %s", path, flags, err, b)
	}
	return time.Since(start)
}

// errnoOf returns the errno an error from the os package wraps, or 0.
func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

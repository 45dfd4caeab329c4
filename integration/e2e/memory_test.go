package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// The figures of TestBoundedMemoryLargeFile.
//
// Measured on 2 CPUs, Linux 6.18, Go 1.26, a non-race daemon, 12 runs of each file size
// (with and without -race in the test binary): the FUSE manager, which holds the cache,
// peaked (VmHWM) at 60.2 to 63.2 MiB, for the 100 MiB file and the 200 MiB one alike: 28.2 to
// 31.2 MiB over the 32 MiB cache. Of that peak about 15.5 MiB is the binary's mapped text
// and data (RssFile) and 44.6 to 47.7 MiB anonymous memory (RssAnon): the cache, the four
// one-block buffers of the streaming pass, go-fuse's request buffers (one of max_read + 4 KiB
// per reader goroutine, 1 MiB each here, about 3 MiB per mounted layer: two layers are
// mounted), the runtime and the GC's headroom. The cache reuses the buffers of the blocks it
// evicts (blockcache's spares), so reading more blocks makes no garbage there: the 200 MiB
// file peaked -2.2 to +1.4 MiB from the 100 MiB one. The daemon proper peaked at 19.7 to
// 20.0 MiB.
const (
	memCacheSize = 32 << 20 // the daemon's [cache] size
	// memOverhead bounds what the process holding the block cache has resident beyond the
	// cache's bytes at its peak: the 31.2 MiB measured × 1.5, rounded up.
	memOverhead = 47 << 20
	// memDaemonBound bounds the daemon proper (containerd's snapshots API and the registry
	// mirror), which holds no block: the 20.0 MiB measured × 1.5.
	memDaemonBound = 30 << 20
	// memGrowthSlack bounds how much higher the cache process may peak for a file twice as
	// large: far above the -2.2 to +1.4 MiB measured, far below the 100 MiB that the larger
	// file's blocks would take if the cache kept them.
	memGrowthSlack = 8 << 20
)

// memResult is what one run of TestBoundedMemoryLargeFile measured.
type memResult struct {
	fileSize          int
	took              time.Duration
	cache, daemon     containerdenv.MemoryPeak // the cache's process (FUSE manager) and the daemon
	cacheRead         int64                    // bytes the cache's process read: registry and stream file
	separateCacheProc bool
}

// TestBoundedMemoryLargeFile: with a 32 MiB block cache, a container reads the whole of a
// file several times the cache's size from a lazily mounted layer, and gets the right bytes:
// the seed's pass streams the layer through the cache (evicting as it goes) into the stream
// file, and the blocks the reads then miss are filled again from that file and verified.
// Meanwhile the memory of the daemon's processes is sampled: the one holding the cache (the
// FUSE manager) must peak under the cache size plus memOverhead, the daemon under
// memDaemonBound, and a file twice as large must not raise the peak by more than
// memGrowthSlack. Each file size runs in an environment of its own, so that each peak is
// that of a fresh process.
func TestBoundedMemoryLargeFile(t *testing.T) {
	containerdenv.RequireRoot(t)
	bin := memoryTestBinary(t)
	var results []memResult
	for _, size := range []int{100 << 20, 200 << 20} {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			results = append(results, runMemory(t, bin, size))
		})
	}
	if t.Failed() || len(results) != 2 {
		return
	}
	small, large := results[0], results[1]
	growth := large.cache.HWM - small.cache.HWM
	t.Logf("cache process VmHWM: %s for a %d MiB file, %s for %d MiB: %+.1f MiB",
		mib(small.cache.HWM), small.fileSize>>20, mib(large.cache.HWM), large.fileSize>>20, float64(growth)/(1<<20))
	if growth > memGrowthSlack {
		t.Errorf("the cache process peaked %s higher for a file twice as large (bound %s): its memory grows with the file", mib(growth), mib(memGrowthSlack))
	}
}

// runMemory runs one file size in a new environment and checks its bounds.
func runMemory(t *testing.T, bin string, size int) memResult {
	env, reg := setupMirror(t, containerdenv.Options{
		SnapshotterBinary: bin,
		SnapshotterConfig: fmt.Sprintf("[cache]\nsize = %q\n", snapshotter.ByteSize(memCacheSize).String()),
	}, true)
	bb, err := containerdenv.BusyboxLayer("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	// Random bytes (ChaCha8 is fast even under the race detector, unlike layertest.Pattern).
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(size >> 20)}).Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	big := []layertest.File{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, ModTime: equivEpoch, Format: tar.FormatPAX}, Data: data}}
	pushStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	img, err := reg.PushStored(ctx, "test/big:v1", bb, big)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed the image in %s", time.Since(pushStart).Round(time.Millisecond))

	r := memResult{fileSize: size}
	cachePID := cacheProcess(t, env)
	r.separateCacheProc = cachePID != env.SnapshotterPID()
	rchar := readRchar(t, cachePID)
	sampler := containerdenv.SampleMemory(env.SnapshotterProcesses, 10*time.Millisecond)
	start := time.Now()
	out, stderr, err := env.RunNerdctl(context.Background(), "--snapshotter=p2p", "run", "--rm", "--net", "none", img.Ref, "sha256sum", "/big")
	r.took = time.Since(start)
	peaks := sampler.Stop()
	r.cacheRead = readRchar(t, cachePID) - rchar
	if err != nil {
		t.Fatalf("sha256sum /big: %v\n%s%s", err, out, stderr)
	}
	if got := strings.Fields(out); len(got) != 2 || got[0] != want {
		t.Fatalf("sha256sum /big printed %q, want %s", out, want)
	}
	for _, p := range peaks {
		switch p.PID {
		case cachePID:
			r.cache = p
		case env.SnapshotterPID():
			r.daemon = p
		}
	}
	if r.cache.Samples == 0 || r.daemon.Samples == 0 {
		t.Fatalf("no memory samples of the daemon (pid %d) or the cache's process (pid %d): %+v", env.SnapshotterPID(), cachePID, peaks)
	}
	t.Logf("pulled, started and read the whole %d MiB file in %s: sha256 right", size>>20, r.took.Round(time.Millisecond))

	// Every layer was mounted lazily, so every byte came through the cache.
	client := env.SnapshotterClient(t)
	for i := range img.Layers {
		info, err := client.Stat(context.Background(), chainID(t, img, i))
		if err != nil || info.Labels[snapshotter.LabelRemote] != "p2p" {
			t.Fatalf("layer %d was not mounted lazily: %v %v", i, info.Labels, err)
		}
	}
	// The cache's process read the blob from the registry once, and then most of the stream
	// again from its file: the blocks the cache had evicted.
	if least := int64(size) + int64(size-2*memCacheSize); r.cacheRead < least {
		t.Errorf("the cache's process read %s; want at least %s (the blob, then the blocks the cache evicted, from the stream file)", mib(r.cacheRead), mib(least))
	}

	name := "FUSE manager"
	if !r.separateCacheProc {
		name = "daemon (serving FUSE itself)"
	}
	t.Logf("%s (pid %d), holding the %s cache: peak VmRSS %s (RssAnon %s), VmHWM %s, %s over the cache (bound %s); it read %s",
		name, cachePID, mib(memCacheSize), mib(r.cache.PeakRSS), mib(r.cache.PeakAnon), mib(r.cache.HWM), mib(r.cache.HWM-memCacheSize), mib(memOverhead), mib(r.cacheRead))
	if r.separateCacheProc {
		t.Logf("daemon (pid %d): peak VmRSS %s, VmHWM %s (bound %s)", r.daemon.PID, mib(r.daemon.PeakRSS), mib(r.daemon.HWM), mib(memDaemonBound))
	}
	if raceBinary(t, env.SnapshotterBinary) {
		t.Logf("the daemon was built with the race detector: its memory is not checked")
		return r
	}
	if limit := int64(memCacheSize + memOverhead); max(r.cache.HWM, r.cache.PeakRSS) > limit {
		t.Errorf("%s peaked at %s resident (VmHWM), over the %s cache + %s overhead", name, mib(r.cache.HWM), mib(memCacheSize), mib(memOverhead))
	}
	if r.separateCacheProc && max(r.daemon.HWM, r.daemon.PeakRSS) > memDaemonBound {
		t.Errorf("the daemon peaked at %s resident (VmHWM), over %s", mib(r.daemon.HWM), mib(memDaemonBound))
	}
	return r
}

// memoryTestBinary returns a daemon binary without the race detector, which multiplies the
// memory this test measures: $P2P_SNAPSHOTTER_BINARY if it has none, "" (the harness's own)
// when the test binary has none, or else one built for this test.
func memoryTestBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("P2P_SNAPSHOTTER_BINARY"); bin != "" {
		if !raceBinary(t, bin) {
			return bin
		}
	} else if !containerdenv.RaceEnabled {
		return ""
	}
	out := filepath.Join(t.TempDir(), "p2p-snapshotter")
	start := time.Now()
	if err := containerdenv.BuildSnapshotterNoRace(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	t.Logf("built p2p-snapshotter without the race detector in %s", time.Since(start).Round(time.Millisecond))
	return out
}

func raceBinary(t *testing.T, bin string) bool {
	t.Helper()
	race, err := containerdenv.BinaryHasRace(bin)
	if err != nil {
		t.Fatalf("daemon binary %s: %v", bin, err)
	}
	return race
}

// cacheProcess returns the pid of the process that holds the block cache: the daemon's FUSE
// manager, or the daemon itself when it serves FUSE in its own process.
func cacheProcess(t *testing.T, env *containerdenv.Env) int {
	t.Helper()
	for _, pid := range env.SnapshotterProcesses() {
		if slices.Contains(containerdenv.ProcessArgs(pid), "fuse-manager") {
			return pid
		}
	}
	if pid := env.SnapshotterPID(); pid != 0 {
		return pid
	}
	t.Fatal("the daemon is not running")
	return 0
}

// readRchar returns the bytes process pid has read with read(2) and the like, files and
// sockets alike (/proc/PID/io rchar).
func readRchar(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/io has no rchar", pid)
	return 0
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

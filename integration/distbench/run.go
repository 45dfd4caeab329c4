package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/integration/cluster"
	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// result is one run's measurements. Times are seconds from the first Warm call.
type result struct {
	Peers int    `json:"peers"`
	Mode  string `json:"mode"`
	Run   int    `json:"run"`
	// Seconds is from the first Warm call to the last completion; Bound the Kumar–Ross
	// bound T* and Ratio Seconds / Bound.
	Seconds float64 `json:"seconds"`
	Bound   float64 `json:"bound_seconds"`
	Ratio   float64 `json:"ratio"`
	// TaskBytes is the layer's uncompressed stream (what peers fetch), BlobBytes its gzip
	// blob; RegistryBytes the blob bytes the registry sent, RegistryRatio that over BlobBytes.
	TaskBytes     int64   `json:"task_bytes"`
	BlobBytes     int64   `json:"blob_bytes"`
	RegistryBytes int64   `json:"registry_bytes"`
	RegistryRatio float64 `json:"registry_ratio"`
	// SeedPass is the seed's pass over the registry blob (its "seeded layer" line; 0 if
	// absent).
	SeedPass float64 `json:"seed_pass_seconds"`
	// PeerFirst, PeerMedian and PeerLast are when peers' Warm calls returned.
	PeerFirst  float64 `json:"peer_first_seconds"`
	PeerMedian float64 `json:"peer_median_seconds"`
	PeerLast   float64 `json:"peer_last_seconds"`
	// CopyMin and CopyMax are the shortest and longest block copy of a peer (the "warmed
	// layer from peers" duration: after registration and the layer index); CopyStartFirst and
	// CopyStartLast when the first and the last peer began its copy (its Warm return less
	// its copy).
	CopyMin        float64 `json:"copy_min_seconds"`
	CopyMax        float64 `json:"copy_max_seconds"`
	CopyStartFirst float64 `json:"copy_start_first_seconds"`
	CopyStartLast  float64 `json:"copy_start_last_seconds"`
	// SeedShare is the seed's share of all bytes the seed and the peers sent; PeerRx the
	// mean bytes a peer received over TaskBytes (frames, headers included).
	SeedShare float64 `json:"seed_upload_share"`
	PeerRx    float64 `json:"peer_rx_per_task"`
	// UploadUse is what the seed and the peers uploaded from the first peer's copy start to
	// the end, over what their caps allow in that time ((N+1) links); Timeline their upload
	// and download second by second.
	UploadUse float64        `json:"upload_use"`
	Timeline  []uploadSample `json:"timeline,omitempty"`
	// CPU over the distribution window; Procs counts the daemons, the scheduler and this
	// process (which serves the registry).
	CPU cpuUse `json:"cpu"`
	// SeedPeak and PeerPeak are the largest resident memory (VmHWM) of the seed's daemon and
	// of any peer's over the run, each holding its data plane in-process; CacheBytes their
	// block cache's bound.
	SeedPeak   int64 `json:"seed_peak_rss"`
	PeerPeak   int64 `json:"peer_peak_rss"`
	CacheBytes int64 `json:"cache_bytes"`
	// Reparentings and ProviderLost count the scheduler's "parent slow: reparenting its
	// children" and "the task's last good provider went bad" decisions (its log).
	Reparentings int `json:"slow_parent_reparentings"`
	ProviderLost int `json:"provider_lost"`
	// Binary is a digest prefix of the p2p-snapshotter the run used.
	Binary string `json:"binary"`
	// Errors are the peers' failed warms, if any.
	Errors []string `json:"errors,omitempty"`
	// Dir is the run's directory when kept.
	Dir string `json:"dir,omitempty"`
}

// randomData returns size bytes of deterministic random data (incompressible).
func randomData(size int64) []byte {
	b := make([]byte, size)
	rand.NewChaCha8([32]byte{'d', 'i', 's', 't'}).Read(b)
	return b
}

// runOne starts a cluster of n peers in topology mode, pushes the layer, warms it on every
// peer at once and tears the cluster down.
func runOne(ctx context.Context, cfg config, n int, mode string, rep int, data []byte) (r result, retErr error) {
	r = result{Peers: n, Mode: mode, Run: rep}
	dir := filepath.Join(cfg.dir, fmt.Sprintf("n%d-%s-%d", n, mode, rep))
	if err := os.RemoveAll(dir); err != nil {
		return r, err
	}
	limits := netlab.Limits{Up: cfg.rate, Down: cfg.rate}
	cache := cfg.cache
	if cache == 0 {
		cache = cfg.size + 64<<20
	}
	progress("%d peers, %s, run %d: starting a cluster in %s", n, mode, rep, dir)
	began := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	// cluster.Start gives the in-process registry os.Stderr for its request log: swap in a
	// file of the run's while Start runs (progress writes to stderr, saved at start-up), and
	// close it only after the registry stopped (defers run last in, first out).
	regLog, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return r, err
	}
	defer regLog.Close()
	os.Stderr = regLog
	c, err := cluster.Start(startCtx, cluster.Options{
		Name: cfg.lab, Subnet: cfg.subnet, Peers: n, Seeds: 1,
		Limits: limits, RegistryLimits: limits,
		CacheSize: strconv.FormatInt(cache, 10), BlockSize: strconv.FormatInt(cfg.block, 10),
		Topology: mode, SchedulerConfig: cfg.schedConfig, Dir: dir,
	})
	os.Stderr = stderr
	defer func() {
		if c != nil {
			if err := c.Close(); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("tear down: %w", err))
			}
		}
		if cfg.keep {
			r.Dir = dir
		} else {
			os.RemoveAll(dir)
		}
	}()
	if err != nil {
		return r, err
	}
	if r.Binary, err = fileDigest(filepath.Join(dir, "bin", "p2p-snapshotter")); err != nil {
		return r, err
	}
	progress("cluster up in %s; pushing the layer", time.Since(began).Round(time.Millisecond))

	files := []layertest.File{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "data.bin", Mode: 0o644, Format: tar.FormatPAX}, Data: data}}
	var tarSize countWriter
	if err := layertest.WriteTar(&tarSize, files); err != nil {
		return r, err
	}
	img, err := c.Registry.PushStored(startCtx, "bench/dist:v1", files)
	if err != nil {
		return r, fmt.Errorf("push: %w", err)
	}
	l := img.Layers[0]
	src := seed.Source{
		Host: c.Registry.Addr, Repository: "bench/dist",
		Blob:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(l.Digest), Size: l.Size},
		DiffID: digest.Digest(l.DiffID),
	}
	r.TaskBytes, r.BlobBytes = int64(tarSize), l.Size

	peerLimits := make([]netlab.Limits, n)
	for i, p := range c.Peers {
		peerLimits[i] = p.Host.Limits()
	}
	r.Bound = linkBound(r.TaskBytes, c.Seeds[0].Host.Limits(), peerLimits)

	// Hosts and processes measured: the seed first, then the peers.
	hosts := []*netlab.Host{c.Seeds[0].Host}
	pids := []string{strconv.Itoa(os.Getpid()), strconv.Itoa(c.Seeds[0].Proc.Pid)}
	for _, s := range c.Schedulers {
		pids = append(pids, strconv.Itoa(s.Proc.Pid))
	}
	for _, p := range c.Peers {
		hosts = append(hosts, p.Host)
		pids = append(pids, strconv.Itoa(p.Proc.Pid))
	}
	before, err := readTraffic(ctx, hosts)
	if err != nil {
		return r, err
	}
	c.Registry.ResetCounters()

	// The distribution: every peer at once.
	warmCtx, cancelWarm := context.WithTimeout(ctx, cfg.timeout)
	defer cancelWarm()
	meter, err := startCPUMeter(pids)
	if err != nil {
		return r, err
	}
	daemons := []string{c.Seeds[0].Host.Name}
	for _, p := range c.Peers {
		daemons = append(daemons, p.Host.Name)
	}
	done := make([]time.Duration, n)
	errs := make([]error, n)
	start := time.Now()
	uploads := startUploadMeter(ctx, c.Lab, c.Seeds[0].Host.Name, daemons, start)
	var wg sync.WaitGroup
	for i, p := range c.Peers {
		wg.Go(func() {
			errs[i] = p.Control.Warm(warmCtx, src)
			done[i] = time.Since(start)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.Timeline = uploads.Stop()
	r.CPU, err = meter.Stop()
	if err != nil {
		return r, err
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	after, err := readTraffic(ctx, hosts)
	if err != nil {
		return r, err
	}

	r.CacheBytes = cache
	if m, err := containerdenv.ReadProcMemory(c.Seeds[0].Proc.Pid); err == nil {
		r.SeedPeak = m.HWM
	}
	for _, p := range c.Peers {
		if m, err := containerdenv.ReadProcMemory(p.Proc.Pid); err == nil {
			r.PeerPeak = max(r.PeerPeak, m.HWM)
		}
	}
	r.Seconds = elapsed.Seconds()
	r.Ratio = r.Seconds / r.Bound
	r.RegistryBytes = c.Registry.BlobBytesServed()
	r.RegistryRatio = float64(r.RegistryBytes) / float64(r.BlobBytes)
	for i, err := range errs {
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", c.Peers[i].Name, err))
		}
	}
	sorted := slices.Clone(done)
	slices.Sort(sorted)
	r.PeerFirst, r.PeerMedian, r.PeerLast = sorted[0].Seconds(), sorted[n/2].Seconds(), sorted[n-1].Seconds()

	var seedTx, allTx, peerRx uint64
	for i := range hosts {
		tx := after[i].tx - before[i].tx
		allTx += tx
		if i == 0 {
			seedTx = tx
		} else {
			peerRx += after[i].rx - before[i].rx
		}
	}
	if allTx > 0 {
		r.SeedShare = float64(seedTx) / float64(allTx)
	}
	r.PeerRx = float64(peerRx) / float64(n) / float64(r.TaskBytes)

	if ds, err := logDurations(c.Seeds[0].Log, "seeded layer"); err == nil && len(ds) > 0 {
		r.SeedPass = ds[0].Seconds()
	}
	if len(c.Schedulers) > 0 {
		r.Reparentings, _ = logCount(c.Schedulers[0].Log, "parent slow: reparenting its children")
		r.ProviderLost, _ = logCount(c.Schedulers[0].Log, "the task's last good provider went bad: finding another")
	}
	r.CopyMin, r.CopyStartFirst = -1, -1
	for i, p := range c.Peers {
		ds, err := logDurations(p.Log, "warmed layer from peers")
		if err != nil || len(ds) == 0 || errs[i] != nil {
			continue
		}
		copyTime, startAt := ds[0].Seconds(), (done[i] - ds[0]).Seconds()
		r.CopyMax, r.CopyStartLast = max(r.CopyMax, copyTime), max(r.CopyStartLast, startAt)
		if r.CopyMin < 0 || copyTime < r.CopyMin {
			r.CopyMin = copyTime
		}
		if r.CopyStartFirst < 0 || startAt < r.CopyStartFirst {
			r.CopyStartFirst = startAt
		}
	}
	r.CopyMin, r.CopyStartFirst = max(r.CopyMin, 0), max(r.CopyStartFirst, 0)
	if window := r.Seconds - r.CopyStartFirst; window > 0 {
		r.UploadUse = float64(allTx) / (float64(n+1) * float64(cfg.rate) / 8 * window)
	}
	return r, nil
}

// countWriter counts the bytes written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// fileDigest returns the first 12 hex digits of the file's SHA-256.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

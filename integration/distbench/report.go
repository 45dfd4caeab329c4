package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
)

// line is a run's one-line summary.
func (r result) line() string {
	s := fmt.Sprintf("%d peers, %s, run %d: %.1f s, T* %.1f s, %.2f× T*; registry/blob %.2f; seed pass %.1f s; peers done %.1f–%.1f s; seed %.0f%% of upload; CPU %.2f busy cores (ours %.2f), saturated %.0f%% of the time; peak RSS seed %s, peers up to %s (cache %s)",
		r.Peers, r.Mode, r.Run, r.Seconds, r.Bound, r.Ratio, r.RegistryRatio, r.SeedPass, r.PeerFirst, r.PeerLast,
		100*r.SeedShare, r.CPU.Busy, r.CPU.Procs, 100*r.CPU.Saturated, bytesText(r.SeedPeak), bytesText(r.PeerPeak), bytesText(r.CacheBytes))
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d PEERS FAILED: %s", len(r.Errors), strings.Join(r.Errors, "; "))
	}
	return s
}

// writeTable prints the results as Markdown, for docs/benchmarks.md.
func writeTable(w io.Writer, cfg config, results []result) {
	fmt.Fprintf(w, "Command (as root): `%s`\n\n", commandLine())
	fmt.Fprintf(w, "One seed and N peers, each a p2p-snapshotter in its own network namespace; the registry in one too; "+
		"every link (registry, seed, peers) capped at %s each way (tbf; %.2f MB/s of TCP payload). "+
		"One layer of a %s random file, stored gzip (task %s, blob %s); blocks of %s; cache %s per daemon. "+
		"Time from the first Warm call to the last peer holding the verified layer. "+
		"T* = max(F/u_s, F/d_min, N·F/(u_s+Σu_i)) on payload rates, F the task. %d CPUs; %s.\n\n",
		cfg.rateArg, payload(cfg.rate)/1e6, bytesText(cfg.size), bytesText(results[0].TaskBytes), bytesText(results[0].BlobBytes),
		bytesText(cfg.block), bytesText(cacheSize(cfg)), runtime.NumCPU(), revision(cfg, results))
	fmt.Fprintln(w, "| peers | mode | seconds | T* | ratio | registry / blob | seed pass | peers done (first, median, last) | copy (min–max) | copy starts (first–last) | seed share of upload | upload use | peer rx / task | slow-parent reparentings | CPU busy (cores) | ours | softirq | saturated |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		ratio := fmt.Sprintf("%.2f×", r.Ratio)
		if len(r.Errors) > 0 {
			ratio += fmt.Sprintf(" (%d failed)", len(r.Errors))
		}
		fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %s | %.2f | %.1f s | %.1f, %.1f, %.1f s | %.1f–%.1f s | %.1f–%.1f s | %.0f%% | %.0f%% | %.3f | %d | %.2f (peak %.2f) | %.2f | %.2f | %.0f%% |\n",
			r.Peers, r.Mode, r.Seconds, r.Bound, ratio, r.RegistryRatio, r.SeedPass,
			r.PeerFirst, r.PeerMedian, r.PeerLast, r.CopyMin, r.CopyMax, r.CopyStartFirst, r.CopyStartLast,
			100*r.SeedShare, 100*r.UploadUse, r.PeerRx, r.Reparentings, r.CPU.Busy, r.CPU.PeakBusy, r.CPU.Procs, r.CPU.Softirq, 100*r.CPU.Saturated)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Seed pass: the seed's read of the registry blob. Copy: a peer's block copy after it had the layer index; "+
		"copy starts: when it began. Upload use: what the seed and the peers uploaded from the first copy start to the end, over what their (N+1) caps allow in that time (frames). Slow-parent reparentings: the scheduler's decisions that a parent was slow (mean + 3σ rule), from its log. Peer rx / task: bytes a peer's eth0 took in over the task (headers included, but counted once per offloaded segment, so one copy reads 1.00–1.05). "+
		"CPU: the machine's busy cores over the window, of which the cluster's processes' (daemons, scheduler, this "+
		"process serving the registry) and softirq (shaping, veths); saturated: share of 1-s samples ≥ 95% busy.")
	for _, r := range results {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "\n%d peers, %s, run %d: %s", r.Peers, r.Mode, r.Run, e)
		}
		if r.Dir != "" {
			fmt.Fprintf(w, "\n%d peers, %s, run %d: logs in %s", r.Peers, r.Mode, r.Run, r.Dir)
		}
	}
	fmt.Fprintln(w)
}

// writeJSON prints the configuration and the results as one JSON object.
func writeJSON(w io.Writer, cfg config, results []result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Command      string   `json:"command"`
		RateBits     uint64   `json:"rate_bits_per_second"`
		PayloadBytes float64  `json:"payload_bytes_per_second"`
		Size         int64    `json:"size"`
		Block        int64    `json:"block_size"`
		Cache        int64    `json:"cache_size"`
		CPUs         int      `json:"cpus"`
		Revision     string   `json:"revision"`
		Results      []result `json:"results"`
	}{commandLine(), cfg.rate, payload(cfg.rate), cfg.size, cfg.block, cacheSize(cfg), runtime.NumCPU(), revision(cfg, results), results})
}

// revision says what the daemons were built from.
func revision(cfg config, results []result) string {
	return fmt.Sprintf("daemons built from %s, p2p-snapshotter %s", cfg.source, results[0].Binary)
}

func cacheSize(cfg config) int64 {
	if cfg.cache > 0 {
		return cfg.cache
	}
	return cfg.size + 64<<20
}

// bytesText prints n in MiB (or bytes below one MiB).
func bytesText(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d B", n)
	}
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}

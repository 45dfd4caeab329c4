package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// labels of the contenders in the table.
var labels = map[string]string{
	contOverlay: "overlayfs (containerd's built-in)",
	contP2P:     "p2p, cold (first pass of the gzip layer)",
	contP2PWarm: "p2p, warm: the cold run's daemon root (snapshots committed, remounted at start)",
	contP2PSeed: "p2p, warm seed: only the cold run's seeded layers on disk (mount from disk)",
	contP2PPeer: "p2p, peer: a fresh node, a seed on another host holds the layers",
	contP2PEsgz: "p2p, eStargz copy: a fresh node mounts each layer from its TOC",
	contStargz:  "stargz (eStargz copy of the image)",
}

func median[T int64 | uint64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// report prints the table for docs/benchmarks.md: medians per contender, then every run.
func (b *bench) report(w io.Writer, results map[string][]result) {
	fmt.Fprintf(w, "Command (as root): `%s`\n\n", commandLine())
	fmt.Fprintf(w, "Image: a busybox layer and a layer of one %d MB random file plus a small file; the container runs `cat /small.txt`. "+
		"gzip image %s (%s)", b.cfg.sizeMB, b.gzipImage.ref, mb(b.gzipImage.size()))
	if b.esgzImage.ref != "" {
		fmt.Fprintf(w, ", eStargz copy %s (%s, `nerdctl image convert --estargz --oci`)", b.esgzImage.ref, mb(b.esgzImage.size()))
	}
	fmt.Fprintf(w, ". Registry in its own network namespace, %s each way (tbf). "+
		"Medians of %d runs (each column its own), each from a new containerd and snapshotter root", b.cfg.rate, b.cfg.runs)
	if b.cfg.dropCaches {
		fmt.Fprint(w, ", page cache dropped")
	}
	fmt.Fprint(w, ".")
	if b.lab != nil {
		peerRate, _ := parseRate(b.cfg.peerRate)
		fmt.Fprintf(w, " p2p-peer: netlab lab %s (%s); the same registry process on a second listener in the lab's registry host, "+
			"%s each way (netlab's tbf); p2p-scheduler in a host of its own, not capped; a seed (p2p-snapshotter, [p2p] seed = true, "+
			"no FUSE manager) in a host capped at %s each way, which read the image's layers from the registry once before the first "+
			"measurement (control socket Warm); the measured node in the root namespace (the lab's driver, link not capped), "+
			"[p2p] address on %s and the lab's scheduler, a new host_id each run. \"seed host sent\" and \"node received\" are "+
			"link counters (headers included) over pull + run: the seed host's eth0 sent, the node's link received (the registry's "+
			"namespace veth for the others, the driver's lab link for p2p-peer).",
			b.lab.lab.Name, b.lab.lab.Subnet, b.cfg.rate, rateText(peerRate), b.lab.lab.Addr)
	}
	if b.p2pRevision != "" {
		fmt.Fprintf(w, " p2p-snapshotter built from the %s.", b.p2pRevision)
	}
	fmt.Fprint(w, "\n\n")

	var base time.Duration
	if rs := results[contOverlay]; len(rs) > 0 {
		base = median(totals(rs))
	}
	fmt.Fprintln(w, "| contender | pull | run | pull + run | / overlayfs | registry sent | seed host sent | node received (% of the image) | layer blobs containerd fetched |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, c := range b.cfg.contenders {
		rs := results[c]
		if len(rs) == 0 {
			continue
		}
		var pulls, runs []time.Duration
		var sent []int64
		var seedSent, received []uint64
		for _, r := range rs {
			pulls, runs, sent = append(pulls, r.pull), append(runs, r.run), append(sent, r.regBytes)
			seedSent, received = append(seedSent, r.seedSent), append(received, r.wireBytes)
		}
		total := median(totals(rs))
		ratio := "–"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f×", total.Seconds()/base.Seconds())
		}
		seedCol := "–"
		if rs[0].peer {
			seedCol = mb(int64(median(seedSent)))
		}
		fmt.Fprintf(w, "| %s | %.2f s | %.2f s | %.2f s | %s | %s | %s | %s (%s) | %d of %d |\n", labels[c],
			median(pulls).Seconds(), median(runs).Seconds(), total.Seconds(), ratio, mb(median(sent)), seedCol,
			mb(int64(median(received))), percent(median(received), b.imageFor(c).size()),
			rs[len(rs)-1].blobsFetched, rs[len(rs)-1].layers)
	}
	b.reportGoals(w, results)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Runs (pull + run = total; registry bytes; for p2p-peer the seed host's):")
	fmt.Fprintln(w)
	for _, c := range b.cfg.contenders {
		var parts []string
		for _, r := range results[c] {
			part := fmt.Sprintf("%.2f + %.2f = %.2f s, %s", r.pull.Seconds(), r.run.Seconds(), r.total().Seconds(), mb(r.regBytes))
			if r.peer {
				part += fmt.Sprintf(", seed host sent %s (+%s in the %s after)", mb(int64(r.seedSent)), mb(int64(r.seedAfter)), settleTime)
			}
			parts = append(parts, part)
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "- %s: %s\n", c, strings.Join(parts, "; "))
		}
	}
	if b.esgzImage.ref != "" {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "stargzd configuration: `%s`\n", strings.Join(strings.Fields(b.stargzConfig()), " "))
	}
}

func totals(rs []result) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		out = append(out, r.total())
	}
	return out
}

// imageFor is the image contender pulls.
func (b *bench) imageFor(contender string) imageInfo {
	switch contender {
	case contStargz:
		return b.esgzImage
	case contP2PPeer:
		return b.peerImage
	}
	return b.gzipImage
}

func percent(n uint64, of int64) string {
	if of <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// reportGoals checks p2p-peer's medians against issue 4's goals: at least 10× faster than
// overlayfs, no slower than stargz, under 10% of the layer received.
func (b *bench) reportGoals(w io.Writer, results map[string][]result) {
	peer := results[contP2PPeer]
	if len(peer) == 0 {
		return
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	total := median(totals(peer))
	var goals []string
	if rs := results[contOverlay]; len(rs) > 0 {
		x := median(totals(rs)).Seconds() / total.Seconds()
		goals = append(goals, fmt.Sprintf("%.1f× faster than overlayfs (goal ≥ 10×: %s)", x, met(x >= 10)))
	}
	if rs := results[contStargz]; len(rs) > 0 {
		x := total.Seconds() / median(totals(rs)).Seconds()
		goals = append(goals, fmt.Sprintf("%.2f× stargz's pull + run (goal ≤ 1.00×: %s)", x, met(x <= 1)))
	}
	var received []uint64
	for _, r := range peer {
		received = append(received, r.wireBytes)
	}
	var big int64 // the largest layer: "the layer" of the goal
	for _, l := range b.peerImage.layers {
		big = max(big, l.size)
	}
	frac := float64(median(received)) / float64(big)
	goals = append(goals, fmt.Sprintf("the node received %s, %.1f%% of the %s layer, everything it received from the registry, the seed and the scheduler counted, headers included (goal < 10%%: %s)",
		mb(int64(median(received))), 100*frac, mb(big), met(frac < 0.10)))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Goals of issue 4 for p2p-peer (medians): %s.\n", strings.Join(goals, "; "))
}

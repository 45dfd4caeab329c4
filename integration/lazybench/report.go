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
	if b.p2pRevision != "" {
		fmt.Fprintf(w, " p2p-snapshotter built from the %s.", b.p2pRevision)
	}
	fmt.Fprint(w, "\n\n")

	var base time.Duration
	if rs := results[contOverlay]; len(rs) > 0 {
		base = median(totals(rs))
	}
	fmt.Fprintln(w, "| contender | pull | run | pull + run | / overlayfs | registry sent | layer blobs containerd fetched |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, c := range b.cfg.contenders {
		rs := results[c]
		if len(rs) == 0 {
			continue
		}
		var pulls, runs []time.Duration
		var sent []int64
		for _, r := range rs {
			pulls, runs, sent = append(pulls, r.pull), append(runs, r.run), append(sent, r.regBytes)
		}
		total := median(totals(rs))
		ratio := "–"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f×", total.Seconds()/base.Seconds())
		}
		fmt.Fprintf(w, "| %s | %.2f s | %.2f s | %.2f s | %s | %s | %d of %d |\n", labels[c],
			median(pulls).Seconds(), median(runs).Seconds(), total.Seconds(), ratio, mb(median(sent)),
			rs[len(rs)-1].blobsFetched, rs[len(rs)-1].layers)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Runs (pull + run = total; registry bytes):")
	fmt.Fprintln(w)
	for _, c := range b.cfg.contenders {
		var parts []string
		for _, r := range results[c] {
			parts = append(parts, fmt.Sprintf("%.2f + %.2f = %.2f s, %s", r.pull.Seconds(), r.run.Seconds(), r.total().Seconds(), mb(r.regBytes)))
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

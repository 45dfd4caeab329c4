// Command distbench measures how fast the P2P network distributes one layer to N peers,
// against the Kumar–Ross bound (DESIGN-NOTES §5, issue 4's benchmark).
//
//	go run ./integration/distbench -peers 8,16,32 -size 256MiB -rate 160mbit -modes tree,dag
//
// It needs root. Each run starts an integration/cluster cluster in a netlab lab: a registry
// (in this process, inside its own host), one p2p-scheduler in the run's topology mode, one
// seed daemon and N peer daemons, every host but the scheduler's capped at -rate up and down
// (tbf). It pushes an image of one layer holding one file of -size random bytes (stored
// gzip), then asks every peer at once to warm the layer (fetch all of it from the P2P network
// and verify it against its diffID) and times it from the first Warm call to the last
// completion. Runs go peers × modes × -runs, each on a new cluster, torn down before the next
// one and on SIGINT/SIGTERM.
//
// For each run it reports the time, the bound
//
//	T* = max(F/u_s, F/d_min, N·F/(u_s + Σu_i))
//
// over the payload rates of the caps (netlab's caps count Ethernet frames: bulk TCP carries
// 1448 bytes in each 1514-byte frame, 0.956 of the rate), F the task's bytes (the layer's
// uncompressed stream, what peers fetch) and u_s the seed's upload (the seed is not one of the
// N); the ratio time / T*; the registry's blob bytes over the blob's size; and where the time
// went: the seed's pass over the registry blob ("seeded layer" in its log), when the first
// and last peer finished, the slowest and fastest block copy ("warmed layer from peers"), the
// seed's share of all bytes the daemons uploaded (netlab counters), and the CPU the machine
// and the cluster's processes used during the window (/proc), so that a run limited by two
// cores rather than by the caps shows as such. The seed's and the peers' upload, second by
// second, is in DIR/results.json with the rest.
//
// cluster.Start builds the daemons for every run from the module above the working
// directory. -src head (the default) exports the commit checked out once, at start-up, and
// builds every run from that copy, so that others editing the tree meanwhile do not change the
// binaries between runs; -src worktree copies the working tree instead, -src live builds from
// it as it is at each run. Two distbenches never share a lab name or a directory: the second
// one to start refuses (netlab.Sweep would remove the first one's lab).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	units "github.com/docker/go-units"
)

// Topology modes the scheduler knows.
var allModes = []string{"tree", "dag"}

type config struct {
	schedConfig string
	peers       []int
	modes       []string
	runs        int
	size        int64  // bytes of the random file
	block       int64  // block size
	cache       int64  // each daemon's cache; 0 for size + 64 MiB
	rate        uint64 // bits/s of frames, every capped link, each way
	rateArg     string
	dir         string
	keep        bool
	json        bool
	lab         string
	subnet      netip.Prefix
	timeout     time.Duration
	src         string // one of allSources
	// source describes what the daemons were built from, for the report.
	source string
}

func main() {
	var cfg config
	var peers, modes, size, block, cache, subnet string
	flag.StringVar(&peers, "peers", "8,16,32", "peer counts N to run, comma-separated")
	flag.StringVar(&modes, "modes", "tree,dag", "scheduler topology modes to run, of "+strings.Join(allModes, ","))
	flag.IntVar(&cfg.runs, "runs", 1, "runs of each (peers, mode), each on a new cluster")
	flag.StringVar(&size, "size", "256MiB", "size of the layer's random file (MB and MiB both mean 2^20)")
	flag.StringVar(&block, "block", "1MiB", "block size of every daemon")
	flag.StringVar(&cache, "cache", "", "block cache of every daemon (default -size + 64MiB)")
	flag.StringVar(&cfg.rateArg, "rate", "160mbit", "cap of every host's link (seed, peers, registry), up and down, in tc units (bit, kbit, mbit, gbit: powers of 1000)")
	flag.StringVar(&cfg.dir, "dir", "/var/tmp/distbench", "directory for the runs' daemon roots, logs and binaries")
	flag.BoolVar(&cfg.keep, "keep", false, "keep each run's directory (logs, daemon roots) instead of removing it")
	flag.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of the table (they are in DIR/results.json either way)")
	flag.StringVar(&cfg.schedConfig, "scheduler-config", "", "p2p-scheduler TOML file for the scheduler (its topology mode is -modes')")
	flag.StringVar(&cfg.lab, "lab", "dbench", "netlab lab name (at most 6 characters, no '-')")
	flag.StringVar(&subnet, "subnet", "10.214.0.0/24", "private IPv4 subnet of the lab; must be unused here")
	flag.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "limit on one run's distribution")
	flag.StringVar(&cfg.src, "src", srcHead, "what to build the daemons from: head (the commit checked out), worktree (the working tree at start-up), live (the working tree at each run)")
	flag.Parse()

	var err error
	if cfg.peers, err = parseInts(peers); err != nil {
		fatal(fmt.Errorf("-peers: %w", err))
	}
	for _, m := range strings.Split(modes, ",") {
		if m = strings.TrimSpace(m); !slices.Contains(allModes, m) {
			fatal(fmt.Errorf("-modes: unknown mode %q; want some of %s", m, strings.Join(allModes, ",")))
		}
		cfg.modes = append(cfg.modes, strings.TrimSpace(m))
	}
	if cfg.size, err = units.RAMInBytes(size); err != nil || cfg.size <= 0 {
		fatal(fmt.Errorf("-size %q: want a positive size like 256MiB", size))
	}
	if cfg.block, err = units.RAMInBytes(block); err != nil || cfg.block <= 0 {
		fatal(fmt.Errorf("-block %q: want a positive size like 1MiB", block))
	}
	if cache != "" {
		if cfg.cache, err = units.RAMInBytes(cache); err != nil || cfg.cache <= 0 {
			fatal(fmt.Errorf("-cache %q: want a positive size like 320MiB", cache))
		}
	}
	if cfg.rate, err = parseRate(cfg.rateArg); err != nil {
		fatal(fmt.Errorf("-rate: %w", err))
	}
	if cfg.subnet, err = netip.ParsePrefix(subnet); err != nil {
		fatal(fmt.Errorf("-subnet: %w", err))
	}
	if !slices.Contains(allSources, cfg.src) {
		fatal(fmt.Errorf("-src %q: want one of %s", cfg.src, strings.Join(allSources, ",")))
	}
	if cfg.dir, err = filepath.Abs(cfg.dir); err != nil {
		fatal(err)
	}
	if cfg.runs < 1 {
		fatal(errors.New("-runs must be at least 1"))
	}
	// Hosts: the registry, the scheduler, the seed and the peers, from the subnet's second
	// address; the driver has the first, the broadcast address is not a host's.
	if maxPeers := 1<<(32-cfg.subnet.Bits()) - 2 - 1 - 3; slices.Max(cfg.peers) > maxPeers {
		fatal(fmt.Errorf("-subnet %s has room for %d peers", cfg.subnet, maxPeers))
	}
	if os.Geteuid() != 0 {
		fatal(errors.New("needs root: network namespaces, veths, tbf"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once; the next run's Sweep removes what is left
	}()
	if err := bench(ctx, cfg); err != nil {
		fatal(err)
	}
}

// bench builds from the source -src names, runs everything and prints the results.
func bench(ctx context.Context, cfg config) (err error) {
	unlock, err := lock(cfg)
	if err != nil {
		return err
	}
	defer unlock()
	var copyDir string
	if cfg.source, copyDir, err = snapshotSource(cfg.src, cfg.dir); err != nil {
		return fmt.Errorf("-src %s: %w", cfg.src, err)
	}
	progress("daemons built from %s", cfg.source)
	if copyDir != "" && !cfg.keep {
		defer os.RemoveAll(copyDir)
	}
	results, err := runAll(ctx, cfg)
	if len(results) == 0 {
		return err
	}
	// The JSON goes to DIR/results.json as well, timelines and all, whatever stdout shows.
	if f, ferr := os.Create(filepath.Join(cfg.dir, "results.json")); ferr == nil {
		err = errors.Join(err, writeJSON(f, cfg, results), f.Close())
		progress("results in %s", f.Name())
	}
	if cfg.json {
		return errors.Join(err, writeJSON(os.Stdout, cfg, results))
	}
	writeTable(os.Stdout, cfg, results)
	return err
}

// runAll runs every (peers, mode) -runs times, in that order, and returns the results of the
// runs that completed.
func runAll(ctx context.Context, cfg config) ([]result, error) {
	data := randomData(cfg.size)
	var results []result
	for _, n := range cfg.peers {
		for _, mode := range cfg.modes {
			for rep := 1; rep <= cfg.runs; rep++ {
				if err := ctx.Err(); err != nil {
					return results, err
				}
				r, err := runOne(ctx, cfg, n, mode, rep, data)
				if err != nil {
					return results, fmt.Errorf("%d peers, %s, run %d: %w", n, mode, rep, err)
				}
				if len(results) > 0 && r.Binary != results[0].Binary {
					progress("warning: p2p-snapshotter changed since the first run (%s, now %s): the tree was edited meanwhile (-src %s)", results[0].Binary, r.Binary, cfg.src)
				}
				progress("%s", r.line())
				results = append(results, r)
			}
		}
	}
	return results, nil
}

// lock makes this process the only distbench using its lab name and its directory: a
// second one would sweep the first one's lab away (netlab.Sweep removes a lab of the same
// name even in use) and overwrite its results. The locks are flocks, released when this
// process ends, however it ends.
func lock(cfg config) (unlock func(), err error) {
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return nil, err
	}
	var files []*os.File
	unlock = func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, p := range []string{filepath.Join(os.TempDir(), "distbench-lab-"+cfg.lab+".lock"), filepath.Join(cfg.dir, ".lock")} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			unlock()
			return nil, err
		}
		files = append(files, f)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			unlock()
			return nil, fmt.Errorf("another distbench holds %s (%v): give this one another -lab, -subnet and -dir, or wait", p, err)
		}
	}
	return unlock, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive integers, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// stderr is this process's standard error, kept aside while os.Stderr is swapped (runOne).
var stderr = os.Stderr

func progress(format string, args ...any) {
	fmt.Fprintf(stderr, "distbench: "+format+"\n", args...)
}

func fatal(err error) {
	fmt.Fprintln(stderr, "distbench:", err)
	os.Exit(1)
}

// commandLine is the command as a person types it, for the report.
func commandLine() string {
	args := []string{"go run ./integration/distbench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

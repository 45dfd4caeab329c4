// Command lazybench measures `nerdctl pull` + `nerdctl run` of one image from a registry behind
// a slow link, side by side in one run: containerd's overlayfs, our p2p snapshotter (cold, and
// twice warm: with the daemon root of the cold run, and with only its seeded layers; and as a
// fresh node whose layers a seed on another host holds, and as a fresh node mounting the
// eStargz copy of the image from its TOC), and stargz-snapshotter on that eStargz copy.
//
//	go run ./integration/lazybench [-runs 3] [-rate 100mbit] [-size 200] [-contenders overlayfs,p2p,p2p-peer,stargz]
//
// It needs root. The registry (go-containerregistry's, in memory; this program run again as
// `lazybench serve-registry`) runs in a network namespace of its own, joined to the host by a
// veth pair in a private /30 (-subnet) with a token bucket filter of -rate on both ends. The
// image is a busybox layer plus a layer holding one -size MB file of random bytes and a
// small file; the container only reads the small file (`cat /small.txt`). The eStargz copy is
// made with `nerdctl image convert --estargz --oci` and pushed beside it.
//
// Every measurement starts from a new containerd (empty content store and metadata), new
// snapshotter processes and a new snapshotter root, with the page cache dropped; the p2p warm
// ones start from what the p2p cold run just before them left on disk, with every process of
// it stopped and its FUSE layers unmounted:
//
//   - p2p-warm: the cold run's whole daemon root. The daemon mounts the layers it had
//     committed again when it starts, and containerd's Prepare finds each layer's snapshot
//     committed already.
//   - p2p-seed: a new root holding only the cold run's seeded layers (layers/: stream and
//     index of each). The mirror learns the layers again from the pull, and each Prepare
//     mounts its layer from disk: the mount-only cost of a node that holds the layer.
//
// p2p-peer is the P2P network's case: a fresh node (new containerd, new daemon root, nothing
// on disk) whose layers a seed on another host has already read from the registry. It runs
// in a netlab lab (-lab, -lab-subnet; peer.go): a registry host, capped at -rate each way,
// where the same registry process serves the same contents on a second listener; a host
// running p2p-scheduler, uncapped; and a seed host, capped at -peer-rate each way, running a
// p2p-snapshotter with [p2p] seed = true, warmed once before the first measurement through
// its control socket (Warm of each of the image's layers). The measured node is the usual
// environment in the root namespace, the lab's driver (its link to the lab is not capped),
// with [p2p] address on the driver's lab address and the lab's scheduler; it pulls the
// image by the lab registry's address. Besides the registry's bytes, the table shows what
// the seed host sent and what the node's link received during pull and run.
//
// The contenders run interleaved, -runs times each; the table shows medians. Everything it creates (namespace, veths, processes, mounts,
// directories) is removed at the end, on error and on SIGINT/SIGTERM.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// Contenders, in the order they run and are shown.
const (
	contOverlay = "overlayfs"
	contP2P     = "p2p"
	contP2PWarm = "p2p-warm"
	contP2PSeed = "p2p-seed"
	contP2PPeer = "p2p-peer"
	contP2PEsgz = "p2p-esgz"
	contStargz  = "stargz"
)

var allContenders = []string{contOverlay, contP2P, contP2PWarm, contP2PSeed, contP2PPeer, contP2PEsgz, contStargz}

type config struct {
	runs            int
	rate            string
	sizeMB          int
	subnet          netip.Prefix
	contenders      []string
	dropCaches      bool
	p2pBinary       string
	schedulerBinary string
	stargzBinary    string
	logLevel        string
	workBase        string
	stargzBGFetch   bool
	keepLogs        string

	// The lab of p2p-peer.
	labName   string
	labSubnet netip.Prefix
	peerRate  string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveRegistryCommand {
		if err := serveRegistry(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "lazybench registry:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var subnet, labSubnet, contenders string
	flag.IntVar(&cfg.runs, "runs", 3, "measurements of each contender; the table shows medians")
	flag.StringVar(&cfg.rate, "rate", "100mbit", "rate of the registry's link, each direction (tc syntax)")
	flag.IntVar(&cfg.sizeMB, "size", 200, "size of the big file in the image, in MB (10^6 bytes)")
	flag.StringVar(&subnet, "subnet", "10.201.0.0/30", "private IPv4 subnet for the registry's veth pair; must be unused here")
	flag.StringVar(&contenders, "contenders", strings.Join(allContenders, ","), "contenders to run, of "+strings.Join(allContenders, ","))
	flag.BoolVar(&cfg.dropCaches, "drop-caches", true, "drop the page cache before each measurement")
	flag.StringVar(&cfg.p2pBinary, "snapshotter-binary", os.Getenv("P2P_SNAPSHOTTER_BINARY"), "p2p-snapshotter binary (default: build ./cmd/p2p-snapshotter)")
	flag.StringVar(&cfg.schedulerBinary, "scheduler-binary", "", "p2p-scheduler binary, for p2p-peer (default: build ./cmd/p2p-scheduler)")
	flag.StringVar(&cfg.stargzBinary, "stargzd-binary", "", "stargzd binary (default: build ./integration/stargzd)")
	flag.StringVar(&cfg.logLevel, "log-level", "info", "log level of containerd and the snapshotter daemons")
	flag.StringVar(&cfg.workBase, "dir", "/var/tmp/lazybench", "directory for the run's files (on a disk filesystem)")
	flag.BoolVar(&cfg.stargzBGFetch, "stargz-background-fetch", false, "let stargz fetch whole layers in the background (its default); off: no_background_fetch = true")
	flag.StringVar(&cfg.keepLogs, "keep-logs", "", "copy every environment's logs into this directory")
	flag.StringVar(&cfg.labName, "lab", "lzb", "p2p-peer: netlab lab name (at most 6 of [a-z0-9]); what an earlier run of it left is removed first")
	flag.StringVar(&labSubnet, "lab-subnet", "10.213.40.0/24", "p2p-peer: private IPv4 subnet of the lab; must be unused here")
	flag.StringVar(&cfg.peerRate, "peer-rate", "1gbit", "p2p-peer: rate of the seed host's link, each direction (tc syntax; 0: not capped)")
	flag.Parse()
	var err error
	if cfg.subnet, err = netip.ParsePrefix(subnet); err != nil {
		fatal(err)
	}
	if cfg.labSubnet, err = netip.ParsePrefix(labSubnet); err != nil {
		fatal(err)
	}
	if r, err := parseRate(cfg.rate); err != nil || r == 0 {
		fatal(fmt.Errorf("-rate %q: want a rate as tc takes it (100mbit): %v", cfg.rate, err))
	}
	if _, err := parseRate(cfg.peerRate); err != nil {
		fatal(err)
	}
	picked := map[string]bool{}
	for _, c := range strings.Split(contenders, ",") {
		c = strings.TrimSpace(c)
		if !contains(allContenders, c) {
			fatal(fmt.Errorf("unknown contender %q; want some of %s", c, strings.Join(allContenders, ",")))
		}
		picked[c] = true
	}
	for _, c := range allContenders { // always in this order: the warm ones need p2p's root
		if picked[c] {
			cfg.contenders = append(cfg.contenders, c)
		}
	}
	if (picked[contP2PWarm] || picked[contP2PSeed]) && !picked[contP2P] {
		fatal(errors.New("p2p-warm and p2p-seed start from what the p2p (cold) run before them left: run p2p too"))
	}
	if cfg.runs < 1 {
		fatal(errors.New("-runs must be at least 1"))
	}
	if os.Geteuid() != 0 {
		fatal(errors.New("needs root: network namespaces, containerd, FUSE and overlayfs mounts"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		stop()
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "lazybench:", err)
	os.Exit(1)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// commandLine is the command as a person types it, for the report.
func commandLine() string {
	args := []string{"go run ./integration/lazybench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func run(ctx context.Context, cfg config) (err error) {
	began := time.Now()
	b, err := newBench(ctx, cfg)
	if b != nil {
		defer func() {
			if cerr := b.close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
			}
			progress("cleaned up; %s in all", time.Since(began).Round(time.Second))
		}()
	}
	if err != nil {
		return err
	}
	if err := b.prepareImages(ctx); err != nil {
		return err
	}
	if err := b.ns.LimitRate(ctx, cfg.rate); err != nil {
		return err
	}
	progress("registry link limited to %s each way (tbf on both veth ends)", cfg.rate)
	if b.lab != nil {
		if err := b.lab.warm(ctx, b.peerImage); err != nil {
			return err
		}
		if _, _, _, err := b.regLog.servedSince(); err != nil { // the seed's pass is no measurement's
			return err
		}
	}
	results := map[string][]result{}
	for rep := 1; rep <= cfg.runs; rep++ {
		for _, c := range cfg.contenders {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := b.measure(ctx, c, rep)
			if err != nil {
				return err
			}
			progress("%s run %d: pull %.2f s, run %.2f s, total %.2f s, registry sent %s in %d requests, node received %s on the wire%s",
				c, rep, r.pull.Seconds(), r.run.Seconds(), r.total().Seconds(), mb(r.regBytes), r.regRequests, mb(int64(r.wireBytes)), r.peerText())
			results[c] = append(results[c], r)
		}
	}
	b.report(os.Stdout, results)
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lazybench: "+format+"\n", args...)
}

// mb formats bytes in MB (10^6).
func mb(n int64) string {
	if n < 100_000 {
		return fmt.Sprintf("%.3f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// workDir makes the run's directory under base, after removing those of earlier runs that
// died (their owner process is gone), with whatever they left mounted.
func workDir(base string) (string, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		d := filepath.Join(base, e.Name())
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && processAlive(pid) {
				continue
			}
		} else if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) < time.Minute {
			continue // being created
		}
		stopProcessesMentioning(d + "/")
		if _, err := containerdenv.UnmountAll(d); err != nil {
			return "", fmt.Errorf("clean up after an earlier run: %w", err)
		}
		if err := os.RemoveAll(d); err != nil {
			return "", fmt.Errorf("clean up after an earlier run: %w", err)
		}
		progress("removed %s, left by an earlier run", d)
	}
	dir, err := os.MkdirTemp(base, "")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// processAlive reports whether pid runs and is a lazybench (a reused pid is not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "lazybench")
}

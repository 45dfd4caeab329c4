package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// result is one measurement of one contender.
type result struct {
	pull, run   time.Duration
	regBytes    int64 // response bytes the registry sent during pull and run
	regRequests int
	// wireBytes is what the node's link received in that time, headers included: the host's
	// veth end to the registry's namespace, or for p2p-peer the driver's link to the lab
	// (registry, seed and scheduler).
	wireBytes uint64
	// p2p-peer only: the bytes the seed host's link sent during pull and run, headers
	// included, and in the settle time after the run (a background fetch would show there).
	peer                bool
	seedSent, seedAfter uint64
	// blobsFetched counts the image's layer blobs in containerd's content store after the
	// run: the layers containerd downloaded itself instead of leaving them to the snapshotter.
	blobsFetched, layers int
}

func (r result) total() time.Duration { return r.pull + r.run }

// settleTime is how long p2p-peer watches the seed's link after the run, before the node
// stops.
const settleTime = 3 * time.Second

// peerText is the seed's part of a progress line.
func (r result) peerText() string {
	if !r.peer {
		return ""
	}
	return fmt.Sprintf(", seed host sent %s (and %s in the %s after the run)", mb(int64(r.seedSent)), mb(int64(r.seedAfter)), settleTime)
}

// measure runs one contender once: a new containerd (and daemon), then
// `nerdctl --snapshotter=X pull IMAGE` and `nerdctl --snapshotter=X run --rm --net none IMAGE
// cat /small.txt`, each timed.
func (b *bench) measure(ctx context.Context, contender string, rep int) (result, error) {
	if b.cfg.dropCaches {
		if err := dropCaches(); err != nil {
			return result{}, err
		}
	}
	var res result
	err := runStep(ctx, fmt.Sprintf("%s-%d", contender, rep), os.Stderr, func(t *step) {
		opts := containerdenv.Options{SnapshotterBinary: b.cfg.p2pBinary, LogLevel: b.cfg.logLevel}
		snapshotter, image, regHost := "overlayfs", b.gzipImage, b.regHost
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+b.regHost, "http://"+b.regHost)
		switch contender {
		case contP2P, contP2PWarm, contP2PSeed, contP2PPeer, contP2PEsgz:
			snapshotter = "p2p"
			var root string
			switch contender {
			case contP2PEsgz:
				// A new node: a new root, removed after the run.
				image = b.esgzImage
				root = filepath.Join(b.dir, fmt.Sprintf("p2p-esgz-root-%d", rep))
				t.Cleanup(func() {
					if err := removeTree(root); err != nil {
						t.Error(err)
					}
				})
			case contP2PPeer:
				image, regHost = b.peerImage, b.lab.regAddr
				// A new node: a new root, removed after the run, and a host id of its own.
				root = filepath.Join(b.dir, fmt.Sprintf("p2p-peer-root-%d", rep))
				t.Cleanup(func() {
					if err := removeTree(root); err != nil {
						t.Error(err)
					}
				})
				var err error
				if opts.SnapshotterConfig, err = b.lab.nodeConfig(fmt.Sprintf("node%d", rep)); err != nil {
					t.Fatal(err)
				}
			default:
				root = b.p2pRoot(t, contender, rep)
			}
			mirror, err := freeAddress()
			if err != nil {
				t.Fatal(err)
			}
			opts.SnapshotterArgs = []string{"--root", root, "--mirror-address", mirror, "--insecure-registry", regHost}
			hosts = fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+regHost, "http://"+mirror)
			b.stopDataPlaneAtCleanup(t, root)
		case contStargz:
			snapshotter, image = "stargz", b.esgzImage
			sock := b.startStargz(t, rep)
			opts.ContainerdConfig = fmt.Sprintf("[proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = %q\n"+
				"  [proxy_plugins.stargz.exports]\n    enable_remote_snapshot_annotations = \"true\"\n", sock)
		}
		env := containerdenv.New(t, opts)
		b.keepLogsOf(t, env)
		if err := env.SetHostsTOML(regHost, hosts); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := b.regLog.servedSince(); err != nil { // skip what came before
			t.Fatal(err)
		}
		res.peer = contender == contP2PPeer
		received := func() (nodeRx, seedTx uint64) {
			var err error
			if res.peer {
				seedTx, nodeRx, err = b.lab.counters(t.Context())
			} else {
				nodeRx, _, err = b.ns.HostIfBytes()
			}
			if err != nil {
				t.Fatal(err)
			}
			return nodeRx, seedTx
		}
		rx0, seed0 := received()

		start := time.Now()
		b.nerdctl(t, env, "--snapshotter="+snapshotter, "pull", "--quiet", image.ref)
		pulled := time.Now()
		out := b.nerdctl(t, env, "--snapshotter="+snapshotter, "run", "--rm", "--net", "none", image.ref, "cat", "/small.txt")
		ran := time.Now()
		if out != smallFile {
			t.Fatalf("the container printed %q; want %q", out, smallFile)
		}
		res.pull, res.run = pulled.Sub(start), ran.Sub(pulled)
		rx1, seed1 := received()
		res.wireBytes, res.seedSent = rx1-rx0, seed1-seed0

		regBytes, regRequests, lines, err := b.regLog.servedSince()
		if err != nil {
			t.Fatal(err)
		}
		res.regBytes, res.regRequests = regBytes, regRequests
		for _, l := range lines {
			t.Logf("registry %s", l)
		}
		if res.peer {
			select {
			case <-time.After(settleTime):
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			}
			_, seed2 := received()
			res.seedAfter = seed2 - seed1
		}
		content := env.Ctr(t, "content", "ls", "-q")
		res.layers = len(image.layers)
		for _, l := range image.layers {
			if strings.Contains(content, l.digest) {
				res.blobsFetched++
			}
		}
	})
	return res, err
}

// stopDataPlaneAtCleanup stops, at the end of the step, the FUSE manager of the daemon whose
// root is root, and unmounts what it left there. The daemon's root is outside the
// environment's directory, so the environment's teardown neither stops its FUSE manager (a
// process that outlives the daemon by design) nor unmounts its layers: without this the next
// run would not start from the layers on disk only. Registered before the environment, it
// runs after the environment's teardown.
func (b *bench) stopDataPlaneAtCleanup(t *step, root string) {
	t.Cleanup(func() {
		if pids := stopProcessesMentioning(root + "/"); len(pids) > 0 {
			t.Logf("stopped the daemon's FUSE manager (pids %v)", pids)
		}
		if b.cfg.keepLogs != "" {
			dst := filepath.Join(b.cfg.keepLogs, sanitize(t.Name()))
			if data, err := os.ReadFile(filepath.Join(root, "fuse-manager.log")); err == nil {
				os.MkdirAll(dst, 0o755)
				os.WriteFile(filepath.Join(dst, "fuse-manager.log"), data, 0o644)
			}
		}
		if left, err := containerdenv.UnmountAll(root); err != nil {
			t.Errorf("unmount under %s: %v", root, err)
		} else if len(left) > 0 {
			t.Logf("unmounted %d mounts the daemon left under its root", len(left))
		}
	})
}

// nerdctl runs nerdctl under the run's context and returns its stdout.
func (b *bench) nerdctl(t *step, env *containerdenv.Env, args ...string) string {
	start := time.Now()
	stdout, stderr, err := env.RunNerdctl(t.Context(), args...)
	if err != nil {
		t.Fatalf("nerdctl %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
	}
	t.Logf("nerdctl %s (%s)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return stdout
}

// p2pRoot returns the daemon root of contender (p2p, p2p-warm or p2p-seed) in repetition rep:
// a new one for the cold run; the cold run's for p2p-warm; a new one with hard links to the
// cold run's seeded layers for p2p-seed. The last of them in the repetition removes them.
func (b *bench) p2pRoot(t *step, contender string, rep int) string {
	cold := filepath.Join(b.dir, fmt.Sprintf("p2p-root-%d", rep))
	seeded := filepath.Join(b.dir, fmt.Sprintf("p2p-seed-root-%d", rep))
	var root string
	switch contender {
	case contP2P:
		root = cold
		for _, d := range []string{cold, seeded} {
			if err := removeTree(d); err != nil {
				t.Fatal(err)
			}
		}
	case contP2PWarm:
		root = cold
		if _, err := os.Stat(filepath.Join(cold, "layers")); err != nil {
			t.Fatalf("the cold run left no layers: %v", err)
		}
	case contP2PSeed:
		root = seeded
		if err := linkTree(filepath.Join(cold, "layers"), filepath.Join(seeded, "layers")); err != nil {
			t.Fatalf("the cold run's layers: %v", err)
		}
	}
	var last string
	for _, c := range b.cfg.contenders {
		if c == contP2P || c == contP2PWarm || c == contP2PSeed {
			last = c
		}
	}
	if contender == last {
		t.Cleanup(func() {
			for _, d := range []string{cold, seeded} {
				if err := removeTree(d); err != nil {
					t.Error(err)
				}
			}
		})
	}
	return root
}

// removeTree unmounts whatever is mounted below dir and removes it.
func removeTree(dir string) error {
	if _, err := containerdenv.UnmountAll(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// linkTree makes dst a copy of the tree src whose regular files are hard links.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o700)
		case d.Type().IsRegular():
			return os.Link(p, target)
		}
		return fmt.Errorf("%s: not a regular file or directory", p)
	})
}

// startStargz starts stargzd with a new root and returns its socket. It is stopped, and its
// root unmounted and removed, in the step's cleanup: registered before the environment's, so
// after containerd has stopped.
func (b *bench) startStargz(t *step, rep int) string {
	dir := filepath.Join(b.dir, fmt.Sprintf("stargz-%d", rep))
	root := filepath.Join(dir, "root")
	sock := filepath.Join(dir, "stargzd.sock")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "stargzd.toml")
	if err := os.WriteFile(cfgPath, []byte(b.stargzConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "stargzd.log")
	p, err := startProcess("stargzd", logPath, exec.Command(b.cfg.stargzBinary,
		"-root", root, "-address", sock, "-config", cfgPath, "-log-level", b.cfg.logLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("stargzd: %v", err)
		}
		if b.cfg.keepLogs != "" {
			if data, err := os.ReadFile(logPath); err == nil {
				os.MkdirAll(filepath.Join(b.cfg.keepLogs, sanitize(t.Name())), 0o755)
				os.WriteFile(filepath.Join(b.cfg.keepLogs, sanitize(t.Name()), "stargzd.log"), data, 0o644)
			}
		}
		if _, err := containerdenv.UnmountAll(dir); err != nil {
			t.Errorf("unmount under %s: %v", dir, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return sock
		}
		if !p.running() || time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("stargzd does not serve %s: %v\n%s", sock, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stargzConfig is stargzd's configuration: the registry over plain HTTP and, unless
// -stargz-background-fetch, no background fetch; everything else stargz's defaults.
func (b *bench) stargzConfig() string {
	return fmt.Sprintf("no_background_fetch = %t\n\n[[resolver.host.%q.mirrors]]\n  host = %q\n  insecure = true\n",
		!b.cfg.stargzBGFetch, b.regHost, b.regHost)
}

// dropCaches writes back dirty pages and drops the page cache, dentries and inodes.
func dropCaches() error {
	if err := exec.Command("sync").Run(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

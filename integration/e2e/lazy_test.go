package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestLazyPullThroughMirror is the product's face: plain `nerdctl --snapshotter=p2p run`,
// containerd pointed at the daemon's registry mirror by hosts.toml, no labels. Every layer
// is mounted lazily from FUSE, the FUSE mounts are there while the container runs, every file
// has the right content, and containerd never fetched a layer blob into its content store.
// The daemon's metrics count the layers lazy and show the FUSE manager's cache at work.
func TestLazyPullThroughMirror(t *testing.T) {
	metricsAddr := freeAddress(t)
	env, reg := setupMirror(t, containerdenv.Options{SnapshotterArgs: []string{"--metrics-address", metricsAddr}}, true)
	img := containerdenv.PushTestImage(t, reg, "test/lazy:v1")

	// A container that stays up while we look at the mounts.
	name := "lazy-running"
	env.Nerdctl(t, "--snapshotter=p2p", "run", "-d", "--name", name, "--net", "none", img.Ref, "sleep", "60")
	t.Cleanup(func() { env.RunNerdctl(context.Background(), "rm", "-f", name) })
	mounts, err := containerdenv.MountsUnder(env.SnapshotterRoot)
	if err != nil {
		t.Fatal(err)
	}
	if got := countFUSE(t, env.SnapshotterRoot); got != len(img.Layers) {
		t.Fatalf("%d FUSE layer mounts under the daemon's root while the container runs, want %d (mounts: %v)", got, len(img.Layers), mounts)
	}

	checkFiles(t, env, "p2p", img)

	client := env.SnapshotterClient(t)
	for i, l := range img.Layers {
		chain := chainID(t, img, i)
		info, err := client.Stat(context.Background(), chain)
		if err != nil {
			t.Fatalf("layer %d: no committed snapshot %s: %v", i, chain, err)
		}
		if info.Labels[snapshotter.LabelRemote] != "p2p" || info.Labels[snapshotter.LabelDiffID] != l.DiffID {
			t.Errorf("layer %d was not mounted lazily: labels %v", i, info.Labels)
		}
	}

	content := env.Ctr(t, "content", "ls", "-q")
	for i, l := range img.Layers {
		if strings.Contains(content, l.Digest) {
			t.Errorf("containerd fetched layer %d's blob %s; a lazily mounted layer must not be downloaded", i, l.Digest)
		}
	}

	m := scrapeMetrics(t, metricsAddr)
	if want := fmt.Sprintf("p2p_layers_prepared_total{outcome=%q} %d\n", "lazy", len(img.Layers)); !strings.Contains(m, want) {
		t.Errorf("the daemon's metrics have no %q", want)
	}
	for _, counter := range []string{`p2p_cache_hits_total`, `p2p_fuse_operation_duration_seconds_count\{op="read"\}`, `p2p_fuse_operation_duration_seconds_count\{op="lookup"\}`} {
		if v := regexp.MustCompile(`(?m)^` + counter + ` (\d+)`).FindStringSubmatch(m); v == nil || v[1] == "0" {
			t.Errorf("the daemon's metrics show no %s (the FUSE manager's data plane): %v", counter, v)
		}
	}
}

// scrapeMetrics returns the daemon's Prometheus metrics at addr (its --metrics-address).
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// setupMirror starts a registry and an environment whose daemon is the registry's mirror
// (containerd's hosts.toml sends pulls to it first), so that plain nerdctl pulls mount layers
// lazily. With daemonReachesRegistry false the daemon is not told that the registry speaks
// plain HTTP and cannot read it.
func setupMirror(t *testing.T, opts containerdenv.Options, daemonReachesRegistry bool) (*containerdenv.Env, *containerdenv.Registry) {
	t.Helper()
	reg := startRegistry(t)
	return setupMirrorFor(t, reg, "", opts, daemonReachesRegistry), reg
}

// startRegistry starts an empty registry for the test, closed in cleanup; it needs root, as
// the environments that pull from it do.
func startRegistry(t *testing.T) *containerdenv.Registry {
	t.Helper()
	containerdenv.RequireRoot(t)
	reg, err := containerdenv.StartRegistry(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// setupMirrorFor is setupMirror for a registry the caller started, with the mirror on the
// address mirror ("" for a free one).
func setupMirrorFor(t *testing.T, reg *containerdenv.Registry, mirror string, opts containerdenv.Options, daemonReachesRegistry bool) *containerdenv.Env {
	t.Helper()
	if mirror == "" {
		mirror = freeAddress(t)
	}
	opts.SnapshotterArgs = append(opts.SnapshotterArgs, "--mirror-address", mirror)
	if daemonReachesRegistry {
		opts.SnapshotterArgs = append(opts.SnapshotterArgs, "--insecure-registry", reg.Host)
	}
	env := containerdenv.New(t, opts)
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg.Host, "http://"+mirror)
	if err := env.SetHostsTOML(reg.Host, hosts); err != nil {
		t.Fatal(err)
	}
	return env
}

// chainID computes the chain ID of layer i from the image's diffIDs.
func chainID(t *testing.T, img *containerdenv.Image, i int) string {
	t.Helper()
	var ids []digest.Digest
	for _, l := range img.Layers[:i+1] {
		ids = append(ids, digest.Digest(l.DiffID))
	}
	return identity.ChainID(ids).String()
}

// countFUSE counts the FUSE layer mounts below dir.
func countFUSE(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep > 4 && sep+1 < len(f) && strings.HasPrefix(f[4], dir) && strings.HasPrefix(f[sep+1], "fuse") {
			n++
		}
	}
	return n
}

func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDaemonRestartKeepsLazyContainers: a container runs on lazily mounted layers; the daemon
// restarts; the container reads every file of the image (most of them never read before the
// restart) and sees no error, and a new container starts on the same layers.
func TestDaemonRestartKeepsLazyContainers(t *testing.T) {
	env, reg := setupMirror(t, containerdenv.Options{}, true)
	img := containerdenv.PushTestImage(t, reg, "test/restart:v1")
	env.Nerdctl(t, "--snapshotter=p2p", "run", "-d", "--name", "keep", "--net", "none", img.Ref, "sleep", "600")
	t.Cleanup(func() { env.RunNerdctl(context.Background(), "rm", "-f", "keep") })
	if got := countFUSE(t, env.SnapshotterRoot); got != len(img.Layers) {
		t.Fatalf("%d FUSE layer mounts, want %d: the layers were not mounted lazily", got, len(img.Layers))
	}

	env.RestartSnapshotter(t)

	paths := slices.Sorted(maps.Keys(img.Files))
	out, stderr, err := env.RunNerdctl(context.Background(), append([]string{"exec", "keep", "sha256sum"}, paths...)...)
	if err != nil {
		t.Fatalf("the running container lost its files across the restart: %v\n%s%s", err, out, stderr)
	}
	got := parseSums(out)
	for _, p := range paths {
		if got[p] != img.Files[p] {
			t.Errorf("container running across the restart: %s: sha256 %q; want %q", p, got[p], img.Files[p])
		}
	}
	checkFiles(t, env, "p2p", img)
}

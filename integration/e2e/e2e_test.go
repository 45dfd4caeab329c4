// Package e2e runs containers through containerd with the p2p-snapshotter daemon as its
// proxy snapshotter, using the integration/containerdenv harness. The tests need root and
// are skipped with -short.
package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

func TestMain(m *testing.M) { os.Exit(containerdenv.RunTests(m)) }

// setup starts an environment with a registry holding the standard test image.
func setup(t *testing.T) (*containerdenv.Env, *containerdenv.Image) {
	t.Helper()
	containerdenv.RequireRoot(t)
	env := containerdenv.New(t, containerdenv.Options{})
	reg := env.StartRegistry(t)
	img := containerdenv.PushTestImage(t, reg, "test/busybox:v1")
	return env, img
}

// run is `nerdctl --snapshotter=SN run --rm --net none IMAGE ARGS…`.
func run(t *testing.T, env *containerdenv.Env, sn string, img *containerdenv.Image, args ...string) string {
	t.Helper()
	return env.Nerdctl(t, append([]string{"--snapshotter=" + sn, "run", "--rm", "--net", "none", img.Ref}, args...)...)
}

// checkFiles runs sha256sum over every regular file of both layers in a container and
// compares with the image's content. It returns sha256sum's output.
func checkFiles(t *testing.T, env *containerdenv.Env, sn string, img *containerdenv.Image) string {
	t.Helper()
	paths := slices.Sorted(maps.Keys(img.Files))
	out := run(t, env, sn, img, append([]string{"sha256sum"}, paths...)...)
	got := parseSums(out)
	for _, p := range paths {
		if got[p] != img.Files[p] {
			t.Errorf("%s in the container: sha256 %q; want %q", p, got[p], img.Files[p])
		}
	}
	return out
}

// parseSums maps path to digest in sha256sum's output.
func parseSums(out string) map[string]string {
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if sum, p, ok := strings.Cut(line, "  "); ok {
			sums[p] = sum
		}
	}
	return sums
}

// TestPullAndRun pulls and runs the image with the p2p snapshotter, then with containerd's
// own overlayfs snapshotter as the baseline, and compares what containers see.
func TestPullAndRun(t *testing.T) {
	env, img := setup(t)
	for _, want := range []string{"/bin/busybox", "/data/large.bin", "/data/small/f00000.txt"} {
		if _, ok := img.Files[want]; !ok {
			t.Fatalf("test image lacks %s", want)
		}
	}
	outputs := map[string][]string{}
	for _, sn := range []string{env.SnapshotterName, "overlayfs"} {
		start := time.Now()
		env.Nerdctl(t, "--snapshotter="+sn, "pull", "--quiet", img.Ref)
		t.Logf("%s: pulled in %s", sn, time.Since(start).Round(time.Millisecond))

		// Every layer is a committed snapshot of this snapshotter.
		committed := 0
		for _, s := range env.Snapshots(t, sn) {
			if s.Kind == "Committed" {
				committed++
			}
		}
		if committed != len(img.Layers) {
			t.Errorf("%s: %d committed snapshots after pull; want %d (one per layer)", sn, committed, len(img.Layers))
		}

		hello := run(t, env, sn, img, "echo", "hello")
		if hello != "hello\n" {
			t.Errorf("%s: echo hello printed %q", sn, hello)
		}
		sums := checkFiles(t, env, sn, img)
		// Both layers' directories, listed: nothing missing, nothing extra.
		ls := run(t, env, sn, img, "sh", "-c", "ls /bin | wc -l; ls /data/small | wc -l")
		want := fmt.Sprintf("%d %d", len(containerdenv.BusyboxApplets)+1, containerdenv.TestImageDataFiles)
		if got := strings.Join(strings.Fields(ls), " "); got != want {
			t.Errorf("%s: entries in /bin and /data/small: %s; want %s", sn, got, want)
		}
		outputs[sn] = []string{hello, sums, ls}
	}
	// The baseline must agree with the p2p snapshotter byte for byte.
	p2p, base := outputs[env.SnapshotterName], outputs["overlayfs"]
	for i := range p2p {
		if p2p[i] != base[i] {
			t.Errorf("output %d differs: p2p %q, overlayfs %q", i, p2p[i], base[i])
		}
	}
	// Our daemon holds the snapshots, not containerd's built-in overlayfs.
	var backend int
	if err := env.SnapshotterClient(t).Walk(context.Background(), func(context.Context, snapshots.Info) error {
		backend++
		return nil
	}); err != nil {
		t.Fatalf("walk the daemon's snapshots: %v", err)
	}
	if backend < len(img.Layers) {
		t.Errorf("the daemon holds %d snapshots; want at least %d", backend, len(img.Layers))
	}
}

// TestRemoveImageRemovesSnapshots runs a container of an image not pulled before (nerdctl
// run pulls it), removes the container and the image, and expects the snapshots gone, from
// containerd's view and from the daemon's.
func TestRemoveImageRemovesSnapshots(t *testing.T) {
	env, img := setup(t)
	sn := env.SnapshotterName
	env.Nerdctl(t, "--snapshotter="+sn, "run", "--name", "c1", "--net", "none", img.Ref, "true")
	var active int
	for _, s := range env.Snapshots(t, sn) {
		if s.Kind == "Active" {
			active++
		}
	}
	if active != 1 {
		t.Errorf("%d active snapshots with one stopped container; want 1", active)
	}

	env.Nerdctl(t, "rm", "c1")
	env.Nerdctl(t, "--snapshotter="+sn, "image", "rm", img.Ref)
	env.Nerdctl(t, "system", "prune", "--all", "--force")

	client := env.SnapshotterClient(t)
	var left []string
	removed := time.Now()
	deadline := removed.Add(30 * time.Second)
	for {
		left = left[:0]
		for _, s := range env.Snapshots(t, sn) {
			left = append(left, "containerd: "+s.Kind+" "+s.Key)
		}
		err := client.Walk(context.Background(), func(_ context.Context, info snapshots.Info) error {
			left = append(left, "daemon: "+info.Kind.String()+" "+info.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("walk the daemon's snapshots: %v", err)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		// containerd removes unreferenced snapshots in its garbage collection, soon after.
		time.Sleep(200 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("snapshots left 30 s after the container and image were removed:\n%s", strings.Join(left, "\n"))
	} else {
		t.Logf("every snapshot gone %s after the image was removed", time.Since(removed).Round(time.Millisecond))
	}
	if mounts, err := containerdenv.MountsUnder(env.SnapshotterRoot); err != nil {
		t.Fatal(err)
	} else if len(mounts) > 0 {
		t.Errorf("mounts left under the daemon's root: %s", strings.Join(mounts, ", "))
	}
}

// TestDaemonRestart restarts the daemon while containerd keeps running: containerd's proxy
// reconnects, the next container starts, and a container that ran across the restart reads
// every file of the image (files nothing read before the restart) right.
func TestDaemonRestart(t *testing.T) {
	env, img := setup(t)
	sn := env.SnapshotterName
	env.Nerdctl(t, "--snapshotter="+sn, "pull", "--quiet", img.Ref)
	env.Nerdctl(t, "--snapshotter="+sn, "run", "-d", "--name", "keep", "--net", "none", img.Ref, "sleep", "600")

	env.RestartSnapshotter(t)

	paths := slices.Sorted(maps.Keys(img.Files))
	out := env.Nerdctl(t, append([]string{"exec", "keep", "sha256sum"}, paths...)...)
	got := parseSums(out)
	for _, p := range paths {
		if got[p] != img.Files[p] {
			t.Errorf("container running across the restart: %s: sha256 %q; want %q", p, got[p], img.Files[p])
		}
	}
	if out := run(t, env, sn, img, "echo", "hello"); out != "hello\n" {
		t.Errorf("after restart: echo hello printed %q", out)
	}
	checkFiles(t, env, sn, img)
	env.Nerdctl(t, "rm", "-f", "keep")
}

// lazyLayers returns the diffIDs of the layers sn mounted lazily, each with how many
// snapshots name it.
func lazyLayers(ctx context.Context, t *testing.T, sn snapshots.Snapshotter) map[string]int {
	t.Helper()
	lazy := map[string]int{}
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[snapshotter.LabelRemote] == "p2p" {
			lazy[info.Labels[snapshotter.LabelDiffID]]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lazy
}

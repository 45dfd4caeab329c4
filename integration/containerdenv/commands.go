package containerdenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// CommandTimeout bounds each nerdctl or ctr command the helpers run.
const CommandTimeout = 2 * time.Minute

// RunNerdctl runs nerdctl against the environment's containerd and returns its output.
func (e *Env) RunNerdctl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return runCmd(ctx, CommandTimeout, e.cmdEnv, append([]string{e.Tools.Nerdctl}, args...)...)
}

// Nerdctl runs nerdctl and returns its stdout; it fails the test, with stderr and the
// command line, if nerdctl fails.
func (e *Env) Nerdctl(t testing.TB, args ...string) string {
	t.Helper()
	start := time.Now()
	stdout, stderr, err := e.RunNerdctl(context.Background(), args...)
	if err != nil {
		t.Fatalf("nerdctl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	t.Logf("nerdctl %s (%s)", shorten(strings.Join(args, " "), 160), time.Since(start).Round(time.Millisecond))
	return stdout
}

// RunCtr runs ctr with the environment's address and namespace.
func (e *Env) RunCtr(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	argv := append([]string{e.Tools.Ctr, "--address", e.ContainerdAddress, "--namespace", e.Namespace}, args...)
	return runCmd(ctx, CommandTimeout, e.cmdEnv, argv...)
}

// Ctr runs ctr and returns its stdout; it fails the test if ctr fails.
func (e *Env) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, err := e.RunCtr(context.Background(), args...)
	if err != nil {
		t.Fatalf("ctr %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// Snapshot is one line of `ctr snapshots ls`.
type Snapshot struct {
	Key, Parent, Kind string
}

// Snapshots lists the snapshots containerd knows in the environment's namespace for the
// named snapshotter ("p2p", "overlayfs", …), with `ctr snapshots ls`.
func (e *Env) Snapshots(t testing.TB, snapshotter string) []Snapshot {
	t.Helper()
	out := e.Ctr(t, "snapshots", "--snapshotter", snapshotter, "ls")
	var list []Snapshot
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 { // the header: KEY PARENT KIND
			continue
		}
		s := Snapshot{Key: f[0], Kind: f[len(f)-1]}
		if len(f) == 3 {
			s.Parent = f[1]
		}
		list = append(list, s)
	}
	return list
}

// SnapshotterClient connects straight to the daemon's socket, bypassing containerd, with
// containerd's own proxy client: what the daemon holds, under the keys containerd gave it.
// The connection is closed in cleanup.
func (e *Env) SnapshotterClient(t testing.TB) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+e.SnapshotterAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("containerdenv: connect to the daemon: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), e.SnapshotterName)
}

// StopSnapshotter stops the daemon with SIGTERM; it fails the test if the daemon does not
// exit cleanly.
func (e *Env) StopSnapshotter(t testing.TB) {
	t.Helper()
	if e.snapshotter == nil {
		t.Fatal("containerdenv: the daemon is not running")
	}
	d := e.snapshotter
	e.snapshotter = nil
	if err := d.stop(); err != nil {
		t.Errorf("containerdenv: stop p2p-snapshotter: %v\n%s", err, e.logTail(snapshotterLogName, 30))
	}
}

// StartSnapshotter starts the daemon again after StopSnapshotter, with the same root,
// socket and options, and waits for its socket.
func (e *Env) StartSnapshotter(t testing.TB) {
	t.Helper()
	if e.snapshotter != nil {
		t.Fatal("containerdenv: the daemon is already running")
	}
	if err := e.startSnapshotter(context.Background()); err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
}

// RestartSnapshotter stops and starts the daemon while containerd keeps running, then
// waits until containerd reaches it again (WaitProxy).
func (e *Env) RestartSnapshotter(t testing.TB) {
	t.Helper()
	start := time.Now()
	e.StopSnapshotter(t)
	stopped := time.Now()
	e.StartSnapshotter(t)
	started := time.Now()
	e.WaitProxy(t)
	t.Logf("containerdenv: daemon restarted: stopped in %s, started in %s, containerd reconnected in %s",
		stopped.Sub(start).Round(time.Millisecond), started.Sub(stopped).Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))
}

// WaitProxy waits until containerd's proxy client reaches the daemon, by listing the
// snapshotter's snapshots through containerd, and fails the test after 15 s.
//
// containerd fails calls to a proxy plugin at once, without retrying, while its gRPC
// connection is down, and redials with exponential backoff (at most 3 s apart): after the
// daemon restarts, a call can fail for a few seconds if an earlier one (its garbage
// collection, say) found the daemon down.
func (e *Env) WaitProxy(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var last error
	for {
		_, stderr, err := e.RunCtr(ctx, "snapshots", "--snapshotter", e.SnapshotterName, "ls")
		if err == nil {
			return
		}
		last = fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr))
		select {
		case <-ctx.Done():
			t.Fatalf("containerdenv: containerd does not reach the daemon: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail returns the last n lines of a log under LogDir, headed by its name.
func (e *Env) logTail(name string, n int) string {
	s, err := tailFile(filepath.Join(e.LogDir, name), n)
	if err != nil {
		return fmt.Sprintf("--- %s: %v", name, err)
	}
	return fmt.Sprintf("--- last lines of %s:\n%s", name, s)
}

// DumpLogs writes the tails of containerd's, the daemon's and the registries' logs to the
// test log.
func (e *Env) DumpLogs(t testing.TB, lines int) {
	t.Helper()
	for _, name := range []string{containerdLogName, snapshotterLogName, registryLogName} {
		t.Log(e.logTail(name, lines))
	}
}

// teardown stops and removes everything the environment started or created. It runs
// whether the test passed or not, and reports what it could not undo as test errors.
func (e *Env) teardown(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var steps []string // the slow steps, reported when teardown is slow
	last := start
	step := func(name string) {
		if d := time.Since(last); d > 500*time.Millisecond {
			steps = append(steps, fmt.Sprintf("%s %s", name, d.Round(time.Millisecond)))
		}
		last = time.Now()
	}
	defer func() {
		t.Logf("containerdenv: torn down in %s", time.Since(start).Round(time.Millisecond))
		if len(steps) > 0 {
			t.Logf("containerdenv: slow teardown steps: %s", strings.Join(steps, ", "))
		}
	}()
	if t.Failed() {
		e.DumpLogs(t, 60)
		e.keepLogs(t)
	}
	errorf := func(format string, args ...any) { t.Errorf("containerdenv: teardown: "+format, args...) }
	step("log dump")

	// Containers first, while containerd runs: their shims and mounts go with them.
	if e.containerd != nil && e.containerd.running() {
		if out, _, err := e.RunNerdctl(ctx, "ps", "-a", "-q", "--no-trunc"); err == nil {
			if ids := strings.Fields(out); len(ids) > 0 {
				if _, stderr, err := e.RunNerdctl(ctx, append([]string{"rm", "-f"}, ids...)...); err != nil {
					t.Logf("containerdenv: teardown: nerdctl rm -f: %v: %s", err, stderr)
				}
			}
		}
	}
	step("remove containers")
	if e.containerd != nil {
		if err := e.containerd.stop(); err != nil {
			t.Logf("containerdenv: teardown: containerd: %v", err)
		}
		e.containerd = nil
	}
	step("stop containerd")
	if e.snapshotter != nil {
		if err := e.snapshotter.stop(); err != nil {
			errorf("p2p-snapshotter: %v\n%s", err, e.logTail(snapshotterLogName, 30))
		}
		e.snapshotter = nil
	}
	step("stop p2p-snapshotter")
	// Shims (and their containers) that outlived containerd name its socket.
	if pids := killProcessesMentioning(e.Dir + "/"); len(pids) > 0 {
		t.Logf("containerdenv: teardown: killed leftover processes %v", pids)
	}
	step("kill leftover processes")
	for _, r := range e.registries {
		if err := r.Close(); err != nil {
			t.Logf("containerdenv: teardown: registry: %v", err)
		}
	}
	step("stop registries")
	if e.ownCgroups {
		if err := removeCgroups(e.Namespace); err != nil {
			errorf("%v", err)
		}
	}
	if unmounted, err := UnmountAll(e.Dir); err != nil {
		errorf("%v", err)
	} else if len(unmounted) > 0 {
		t.Logf("containerdenv: teardown: unmounted leftovers: %s", strings.Join(unmounted, ", "))
	}
	if e.runDirs != nil {
		if err := e.runDirs.release(); err != nil {
			errorf("remove /run/containerd leftovers: %v", err)
		}
	}
	if err := removeTree(e.Dir); err != nil {
		errorf("%v", err)
	}
	step("unmount and remove")
}

// shorten cuts s to at most n bytes for a log line.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-len(" …")] + " …"
}

// keepLogs copies the whole log directory under $P2P_TEST_LOGS, when set, for a failed
// test: teardown removes the environment's directory.
func (e *Env) keepLogs(t testing.TB) {
	base := os.Getenv("P2P_TEST_LOGS")
	if base == "" {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dst := filepath.Join(base, name+"-"+filepath.Base(e.Dir))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Logf("containerdenv: keep logs: %v", err)
		return
	}
	entries, _ := os.ReadDir(e.LogDir)
	for _, ent := range entries {
		b, err := os.ReadFile(filepath.Join(e.LogDir, ent.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, ent.Name()), b, 0o644)
		}
		if err != nil {
			t.Logf("containerdenv: keep logs: %v", err)
		}
	}
	t.Logf("containerdenv: full logs kept in %s", dst)
}

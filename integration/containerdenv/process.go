package containerdenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
)

// stopTimeout is how long a daemon has to exit after SIGTERM before it is killed.
const stopTimeout = 10 * time.Second

// daemon is a long-running child process whose output goes to a log file.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when Wait returns
	err    error         // Wait's result, set before exited closes
}

// startDaemon starts argv with env, appending its stdout and stderr to logPath. The process
// gets SIGKILL if the test binary dies (Pdeathsig), so a killed test leaves no daemon.
func startDaemon(name, logPath string, env []string, argv ...string) (*daemon, error) {
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "\n=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := netlab.StartOnStableThread(cmd); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: lf, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// running reports whether the process has not exited yet.
func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to stopTimeout, then kills the process group. It returns the
// process's exit error when it did not exit cleanly on SIGTERM.
func (d *daemon) stop() error {
	defer d.log.Close()
	if !d.running() {
		return fmt.Errorf("%s had already exited: %v", d.name, d.err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return d.err
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.exited
	return fmt.Errorf("%s did not exit within %s of SIGTERM: killed", d.name, stopTimeout)
}

// waitReady polls ready every 100 ms until it returns nil, the daemon exits, or ctx ends.
func (d *daemon) waitReady(ctx context.Context, ready func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("%s exited before it was ready: %v", d.name, d.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v)", d.name, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// runCmd runs argv with env under a timeout and returns its stdout and stderr.
func runCmd(ctx context.Context, timeout time.Duration, env []string, argv ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Children that keep the pipes open must not hold Wait forever.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: timed out after %s", err, timeout)
	}
	return out.String(), errb.String(), err
}

// tailBuffer keeps the last n lines added to it.
type tailBuffer struct {
	mu    sync.Mutex
	n     int
	lines []string
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (b *tailBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines) > b.n {
		b.lines = b.lines[len(b.lines)-b.n:]
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n"), nil
}

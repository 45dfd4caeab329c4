package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running process that Host.Start started in a host: the leader of its
// own process group, which Kill, Stop and the lab's Close signal as a whole.
type Process struct {
	// Pid is the leader's process id, and the group's id.
	Pid int

	name   string // argv[0]
	cmd    *exec.Cmd
	exited chan struct{} // closed once the leader has exited and been reaped
	err    error         // cmd.Wait's result, set before exited closes
}

// Start starts argv in the host's namespace, in a process group of its own, with this
// process's environment (use env(1) to change it) and its stdout and stderr appended to
// logPath ("" discards them). When ctx is done, or the test binary dies, the process is
// killed (the test binary's death kills the leader only; Sweep the rest). Close kills what
// is left of the group.
func (h *Host) Start(ctx context.Context, logPath string, argv ...string) (*Process, error) {
	l := h.lab
	if len(argv) == 0 {
		return nil, fmt.Errorf("netlab %s: host %s: start: no command", l.Name, h.Name)
	}
	cmd := exec.Command(l.ip, append([]string{"netns", "exec", h.Netns}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if logPath != "" { // else os/exec connects the child to /dev/null
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("netlab %s: host %s: start %s: %w", l.Name, h.Name, argv[0], err)
		}
		defer f.Close() // the child has its own copy
		fmt.Fprintf(f, "=== %s netlab %s host %s: %s\n", time.Now().Format(time.RFC3339Nano), l.Name, h.Name, strings.Join(argv, " "))
		cmd.Stdout, cmd.Stderr = f, f
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("netlab %s: host %s: start %s: lab closed", l.Name, h.Name, argv[0])
	}
	if err := StartOnStableThread(cmd); err != nil {
		return nil, fmt.Errorf("netlab %s: host %s: start %s: %w", l.Name, h.Name, argv[0], err)
	}
	p := &Process{Pid: cmd.Process.Pid, name: argv[0], cmd: cmd, exited: make(chan struct{})}
	l.procs[p] = struct{}{}
	stop := context.AfterFunc(ctx, func() { _ = signalGroup(p.Pid, syscall.SIGKILL) })
	go func() {
		p.err = cmd.Wait()
		stop()
		l.mu.Lock()
		delete(l.procs, p)
		l.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns its exit error (an *exec.ExitError), or
// ctx's error if ctx is done first. It may be called any number of times.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL to the process's group and waits for the leader to be reaped. It is no
// error if the process had exited already.
func (p *Process) Kill() error {
	err := signalGroup(p.Pid, syscall.SIGKILL)
	<-p.exited
	return err
}

// Stop sends SIGTERM to the process's group, waits up to timeout for the leader to exit,
// then sends SIGKILL to what is left of the group. It returns nil if the leader exited in
// time with status 0 or by SIGTERM, its exit error if it exited otherwise (or had exited
// before), and an error if it had to be killed.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	if err := signalGroup(p.Pid, syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		if err := p.Kill(); err != nil {
			return err
		}
		return fmt.Errorf("process %d (%s) did not exit within %s of SIGTERM: killed", p.Pid, p.name, timeout)
	}
	if err := signalGroup(p.Pid, syscall.SIGKILL); err != nil {
		return err
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return p.err
}

var (
	starterOnce sync.Once
	starter     chan func()
)

// StartOnStableThread starts cmd from an OS thread that lives as long as this process.
// Pdeathsig fires when the thread that started the child ends, not the process, and the Go
// runtime ends a thread whenever a goroutine locked to it returns: a daemon started from such
// a thread would be killed in the middle of a test.
func StartOnStableThread(cmd *exec.Cmd) error {
	starterOnce.Do(func() {
		starter = make(chan func())
		go func() {
			runtime.LockOSThread() // for good
			for f := range starter {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	starter <- func() { done <- cmd.Start() }
	return <-done
}

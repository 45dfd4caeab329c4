package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the namespaces it names.
const netnsDir = "/run/netns"

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// Sweep removes what a lab called name left behind when its Close never ran (a killed test
// binary): it kills every process in the namespaces name-*, deletes the root namespace's
// interfaces of the lab and those namespaces. It returns what it removed: namespaces as
// "netns NAME", interfaces as "link NAME". A lab of that name that is still in use is removed
// just the same: give each test its own name.
func Sweep(ctx context.Context, name string) ([]string, error) {
	if !labNameRE.MatchString(name) {
		return nil, fmt.Errorf("netlab %q: sweep: bad name: %w", name, errdefs.ErrInvalidArgument)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netlab %s: sweep: %w (install iproute2)", name, err)
	}
	removed, err := sweep(ctx, ip, name)
	if err != nil {
		return removed, fmt.Errorf("netlab %s: sweep: %w", name, err)
	}
	return removed, nil
}

// sweep is Sweep and the second half of Close.
func sweep(ctx context.Context, ip, name string) ([]string, error) {
	namespaces, links, err := labObjects(ctx, ip, name)
	if err != nil {
		return nil, err
	}
	var errs []error
	if err := killInNetns(namespaces); err != nil {
		errs = append(errs, err)
	}
	var removed []string
	// The driver's link first: deleting a namespace frees its interfaces (and so the root
	// ends of their veth pairs) only later, in the background, but `ip link del` at once.
	for _, link := range links {
		if _, err := runCmd(ctx, ip, "link", "del", link); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "link "+link)
	}
	for _, ns := range namespaces {
		if _, err := runCmd(ctx, ip, "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+ns)
	}
	return removed, errors.Join(errs...)
}

// leftovers returns what labObjects finds, as sweep reports it.
func leftovers(ctx context.Context, ip, name string) ([]string, error) {
	namespaces, links, err := labObjects(ctx, ip, name)
	var out []string
	for _, l := range links {
		out = append(out, "link "+l)
	}
	for _, ns := range namespaces {
		out = append(out, "netns "+ns)
	}
	return out, err
}

// labObjects returns the namespaces (name-*) and the root namespace's interfaces (name-*,
// and name+"h"+digits) of the lab called name. Lab names hold no "-", so no other lab's
// objects match.
func labObjects(ctx context.Context, ip, name string) (namespaces, links []string, err error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			namespaces = append(namespaces, e.Name())
		}
	}
	var ifaces []struct {
		Name string `json:"ifname"`
	}
	if err := runJSON(ctx, &ifaces, ip, "-j", "link", "show"); err != nil {
		return nil, nil, err
	}
	hostPort := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `h[0-9]+$`)
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, name+"-") || hostPort.MatchString(i.Name) {
			links = append(links, i.Name)
		}
	}
	return namespaces, links, nil
}

// killInNetns SIGKILLs every process (but this one) whose network namespace is one of the
// named ones, and waits up to 5 s for them to die. Dead processes free their namespace even
// before they are reaped.
func killInNetns(namespaces []string) error {
	type nsID struct{ dev, ino uint64 }
	want := map[nsID]bool{}
	for _, ns := range namespaces {
		var st unix.Stat_t
		if err := unix.Stat(nsPath(ns), &st); err != nil {
			continue
		}
		want[nsID{st.Dev, st.Ino}] = true
	}
	if len(want) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue // gone, or a kernel thread
		}
		if want[nsID{st.Dev, st.Ino}] {
			if err := unix.Kill(pid, unix.SIGKILL); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for !dead(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still runs after SIGKILL", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// dead reports whether process pid is gone or a zombie.
func dead(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// inNetns runs f on an OS thread that has joined the network namespace at path: sockets
// that f creates belong to that namespace for their whole life. f must not start
// goroutines that create sockets. The thread returns to its namespace afterwards, or, if
// that fails, is thrown away.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		ns, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace: %w", &os.PathError{Op: "open", Path: path, Err: err})
			return
		}
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		unix.Close(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("join network namespace %s: %w", path, err)
			return
		}
		err = f()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the goroutine ends locked, and the runtime ends the thread with it.
		errc <- err
	}()
	return <-errc
}

// cmdTimeout bounds each ip or tc command.
const cmdTimeout = 30 * time.Second

// runCmd runs argv and returns its stdout, or an error with its output.
func runCmd(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// runJSON runs argv and decodes its stdout into v.
func runJSON(ctx context.Context, v any, argv ...string) error {
	out, err := runCmd(ctx, argv...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: decode output: %w", strings.Join(argv, " "), err)
	}
	return nil
}

// signalGroup sends sig to process group pgid; a group that is gone is no error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", pgid, err)
	}
	return nil
}

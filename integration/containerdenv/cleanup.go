package containerdenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MountsUnder returns the mount points at or below dir, deepest first, read from
// /proc/self/mountinfo.
func MountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Deepest first; the same path mounted twice appears twice and is unmounted twice.
	slices.SortStableFunc(mounts, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return mounts, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, …).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountAll lazily unmounts (umount -l) every mount at or below dir, deepest first, until
// none is left, and returns the mount points it unmounted. A FUSE mount whose server died is
// detached like any other, so it cannot hang or break a later run.
func UnmountAll(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var done []string
	for range 5 {
		mounts, err := MountsUnder(dir)
		if err != nil {
			return done, err
		}
		if len(mounts) == 0 {
			return done, nil
		}
		var errs []error
		for _, m := range mounts {
			err := unix.Unmount(m, unix.MNT_DETACH)
			switch {
			case err == nil:
				done = append(done, m)
			case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
				// Already gone with its parent.
			default:
				errs = append(errs, fmt.Errorf("umount -l %s: %w", m, err))
			}
		}
		if len(errs) > 0 {
			return done, errors.Join(errs...)
		}
	}
	mounts, _ := MountsUnder(dir)
	if len(mounts) > 0 {
		return done, fmt.Errorf("mounts still under %s: %s", dir, strings.Join(mounts, ", "))
	}
	return done, nil
}

// removeTree unmounts everything under dir and removes it.
func removeTree(dir string) error {
	_, uerr := UnmountAll(dir)
	var rerr error
	for i := range 3 {
		if rerr = os.RemoveAll(dir); rerr == nil {
			break
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
	}
	return errors.Join(uerr, rerr)
}

// processesMentioning returns the pids of processes (other than this one) that have
// substr in an argument of their command line, plus all their descendants: containerd,
// our daemon and the runc shims of a test name its directory or socket; the containers are
// the shims' children.
func processesMentioning(substr string) []int {
	return processTree(func(pid int) bool {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		return err == nil && strings.Contains(string(cmdline), substr)
	})
}

// processTree returns the pids of the processes (other than this one) that match, plus all
// their descendants.
func processTree(match func(pid int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	children := map[int][]int{}
	var roots []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ppid, err := parentPID(pid); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
		if match(pid) {
			roots = append(roots, pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(pid int) {
		if seen[pid] || pid == self {
			return
		}
		seen[pid] = true
		out = append(out, pid)
		for _, c := range children[pid] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// killProcessesMentioning SIGKILLs processesMentioning(substr) and waits briefly for them
// to go. It returns the pids it signalled.
func killProcessesMentioning(substr string) []int {
	pids := processesMentioning(substr)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// ownerFile, in each environment directory, names the process that owns it.
const ownerFile = "owner"

// writeOwner records this process (pid and start time, so a reused pid is not mistaken
// for it) as the owner of dir.
func writeOwner(dir string) error {
	start, err := processStart(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", os.Getpid(), start), 0o644)
}

// ownerAlive reports whether the process recorded in dir's owner file still runs.
func ownerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		// No owner file: being created right now, or left by a crash during creation.
		st, serr := os.Stat(dir)
		return serr == nil && time.Since(st.ModTime()) < time.Minute
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	start, err := processStart(pid)
	return err == nil && start == f[1] && !isZombie(pid)
}

// processStart returns field 22 of /proc/PID/stat, the process's start time in clock ticks.
func processStart(pid int) (string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f[19], nil
}

// SweepStale removes what earlier runs left under base when they died without cleaning
// up (a killed test binary): for each environment directory whose owner is gone, it kills
// the processes that name the directory (containerd, the daemon, shims and their
// containers), unmounts everything below it and removes it. It returns the directories
// it removed.
func SweepStale(base string) ([]string, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if ownerAlive(dir) {
			continue
		}
		killProcessesMentioning(dir + "/")
		_ = removeCgroups(namespacePrefix + e.Name())
		if err := removeTree(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", dir, err))
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// cgroupMounts returns the mount points of the cgroup (v1) and cgroup2 hierarchies.
func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		_, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") {
			if f := strings.Fields(line); len(f) > 4 {
				out = append(out, unescapeMountPath(f[4]))
			}
		}
	}
	return out
}

// removeCgroups removes the cgroup named name (nerdctl's cgroupfs parent of a namespace's
// containers, "/NAMESPACE") and the empty cgroups below it, in every hierarchy. A cgroup
// that still has processes stays.
func removeCgroups(name string) error {
	var errs []error
	for _, h := range cgroupMounts() {
		root := filepath.Join(h, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

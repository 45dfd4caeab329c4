package containerdenv

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RaceEnabled reports whether the calling test binary runs under the race detector, in which
// case the harness builds the daemon with it too (and the daemon's memory is several times
// what it is in production).
const RaceEnabled = raceEnabled

// SnapshotterPID returns the process ID of the running daemon, or 0 when it is not running.
func (e *Env) SnapshotterPID() int {
	if e.snapshotter == nil || !e.snapshotter.running() {
		return 0
	}
	return e.snapshotter.cmd.Process.Pid
}

// SnapshotterProcesses returns the pids of the daemon and of every process it runs for this
// environment: processes with an argument naming the daemon's root (the daemon's --root, its
// FUSE manager's --config), and their descendants. The FUSE manager holds the block cache,
// so a test of the daemon's memory must watch it too.
func (e *Env) SnapshotterProcesses() []int {
	root := filepath.Clean(e.SnapshotterRoot)
	out := processTree(func(pid int) bool {
		for _, arg := range ProcessArgs(pid) {
			if arg == root || strings.HasPrefix(arg, root+"/") {
				return true
			}
		}
		return false
	})
	slices.Sort(out)
	return out
}

func parentPID(pid int) (int, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid …: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.Atoi(f[1])
}

// ProcessArgs returns the command line of process pid, nil if it is gone.
func ProcessArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ProcMemory is what /proc/PID/status says of a process's resident memory, in bytes.
type ProcMemory struct {
	RSS  int64 // VmRSS: resident now
	HWM  int64 // VmHWM: the peak of VmRSS over the process's life, as the kernel saw it
	Anon int64 // RssAnon: the resident part of VmRSS that is anonymous memory (the Go heap, stacks)
	File int64 // RssFile: the resident part that maps files (the binary's text and data)
}

// ReadProcMemory reads VmRSS, VmHWM, RssAnon and RssFile of process pid.
func ReadProcMemory(pid int) (ProcMemory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMemory{}, err
	}
	var m ProcMemory
	var found int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		}
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("/proc/%d/status: %s:%s", pid, k, v)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		*dst = kb << 10
		found++
	}
	if found != 4 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS, VmHWM, RssAnon and RssFile (a zombie?)", pid)
	}
	return m, nil
}

// MemoryPeak is what a MemorySampler saw of one process.
type MemoryPeak struct {
	PID      int
	Args     []string
	PeakRSS  int64 // the largest VmRSS sampled
	PeakAnon int64 // the largest RssAnon sampled
	HWM      int64 // VmHWM at the last sample
	Samples  int
}

// MemorySampler reads the memory of a changing set of processes at a fixed interval.
type MemorySampler struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	peaks map[int]*MemoryPeak
}

// SampleMemory starts reading ReadProcMemory of every process pids returns, every interval,
// until Stop.
func SampleMemory(pids func() []int, interval time.Duration) *MemorySampler {
	s := &MemorySampler{stop: make(chan struct{}), done: make(chan struct{}), peaks: map[int]*MemoryPeak{}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			s.sample(pids())
			select {
			case <-s.stop:
				s.sample(pids())
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *MemorySampler) sample(pids []int) {
	for _, pid := range pids {
		m, err := ReadProcMemory(pid)
		if err != nil {
			continue // exited
		}
		s.mu.Lock()
		p := s.peaks[pid]
		if p == nil {
			p = &MemoryPeak{PID: pid, Args: ProcessArgs(pid)}
			s.peaks[pid] = p
		}
		p.PeakRSS = max(p.PeakRSS, m.RSS)
		p.PeakAnon = max(p.PeakAnon, m.Anon)
		p.HWM = max(p.HWM, m.HWM)
		p.Samples++
		s.mu.Unlock()
	}
}

// Peaks returns what was seen so far, by pid order.
func (s *MemorySampler) Peaks() []MemoryPeak {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]MemoryPeak, 0, len(s.peaks))
	for _, p := range s.peaks {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b MemoryPeak) int { return a.PID - b.PID })
	return out
}

// Stop takes a last sample, stops the sampler and returns Peaks.
func (s *MemorySampler) Stop() []MemoryPeak {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.Peaks()
}

// BuildSnapshotterNoRace builds ./cmd/p2p-snapshotter of this module into out without the
// race detector, whatever the calling test binary has: for tests that measure the daemon's
// memory, which the race detector multiplies.
func BuildSnapshotterNoRace(ctx context.Context, out string) error {
	return buildSnapshotter(ctx, out, false)
}

// BinaryHasRace reports whether the Go binary at path was built with the race detector.
func BinaryHasRace(path string) (bool, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return false, err
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true", nil
		}
	}
	return false, nil
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
)

// cpuTimes is the first line of /proc/stat: the whole machine's CPU time by kind, in clock
// ticks summed over every CPU.
type cpuTimes struct {
	user, nice, system, idle, iowait, irq, softirq, steal uint64
}

func (c cpuTimes) total() uint64 {
	return c.user + c.nice + c.system + c.idle + c.iowait + c.irq + c.softirq + c.steal
}

// busy is every tick not idle (iowait counts as idle: the CPU could have run something).
func (c cpuTimes) busy() uint64 { return c.total() - c.idle - c.iowait }

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{c.user - o.user, c.nice - o.nice, c.system - o.system, c.idle - o.idle,
		c.iowait - o.iowait, c.irq - o.irq, c.softirq - o.softirq, c.steal - o.steal}
}

func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	return cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on every Linux we run on).
const clockTicks = 100

// procTicks returns the user and system CPU time of process pid, in clock ticks.
func procTicks(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: bad CPU times", pid)
	}
	return utime + stime, nil
}

// cpuUse is what the machine and a set of processes did with the CPU over a window.
type cpuUse struct {
	// Busy, Softirq and Procs are in cores (CPU seconds per second): the whole machine's
	// busy time, the part of it in softirq (where shaping and veths run), and the processes'
	// own user and system time.
	Busy, Softirq, Procs float64
	// Saturated is the share of one-second samples in which the machine was at least 95%
	// busy; PeakBusy the busiest sample, in cores.
	Saturated, PeakBusy float64
}

// cpuMeter measures cpuUse from Start to Stop, sampling the machine every second.
type cpuMeter struct {
	pids       []string
	start      time.Time
	t0         cpuTimes
	p0         uint64
	stop, done chan struct{}
	samples    []float64 // busy fraction of each second
}

func startCPUMeter(pids []string) (*cpuMeter, error) {
	m := &cpuMeter{pids: pids, stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	var err error
	if m.t0, err = readCPUTimes(); err != nil {
		return nil, err
	}
	m.p0 = m.procTicks()
	go m.sample()
	return m, nil
}

// procTicks sums the processes' CPU ticks; a process that is gone counts nothing.
func (m *cpuMeter) procTicks() uint64 {
	var sum uint64
	for _, pid := range m.pids {
		if t, err := procTicks(pid); err == nil {
			sum += t
		}
	}
	return sum
}

func (m *cpuMeter) sample() {
	defer close(m.done)
	prev := m.t0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		cur, err := readCPUTimes()
		if err != nil {
			continue
		}
		if d := cur.sub(prev); d.total() > 0 {
			m.samples = append(m.samples, float64(d.busy())/float64(d.total()))
		}
		prev = cur
	}
}

// Stop ends the window and returns what it measured.
func (m *cpuMeter) Stop() (cpuUse, error) {
	close(m.stop)
	<-m.done
	wall := time.Since(m.start).Seconds()
	t1, err := readCPUTimes()
	if err != nil {
		return cpuUse{}, err
	}
	d := t1.sub(m.t0)
	ncpu := float64(runtime.NumCPU())
	u := cpuUse{Procs: float64(m.procTicks()-m.p0) / clockTicks / wall}
	if d.total() > 0 {
		u.Busy = float64(d.busy()) / float64(d.total()) * ncpu
		u.Softirq = float64(d.softirq) / float64(d.total()) * ncpu
	}
	var saturated int
	for _, s := range m.samples {
		if s >= 0.95 {
			saturated++
		}
		u.PeakBusy = max(u.PeakBusy, s*ncpu)
	}
	if len(m.samples) > 0 {
		u.Saturated = float64(saturated) / float64(len(m.samples))
	}
	return u, nil
}

// traffic is a host's eth0 byte counters, Ethernet headers included.
type traffic struct{ rx, tx uint64 }

// readTraffic reads the counters of every host, concurrently.
func readTraffic(ctx context.Context, hosts []*netlab.Host) ([]traffic, error) {
	out := make([]traffic, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, h := range hosts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i].rx, out[i].tx, errs[i] = h.Counters(ctx)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// logfmtField matches one key=value of a logrus text line; the value may be quoted.
var logfmtField = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^ ]*)`)

// parseLogfmt returns the fields of a logrus text line, quoted values unquoted.
func parseLogfmt(line string) map[string]string {
	fields := map[string]string{}
	for _, m := range logfmtField.FindAllStringSubmatch(line, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		fields[m[1]] = v
	}
	return fields
}

// logLines calls f with the fields of every line of the log at path whose message is msg,
// in order.
func logLines(path, msg string, f func(map[string]string)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	needle := "msg=" + strconv.Quote(msg)
	for sc.Scan() {
		if strings.Contains(sc.Text(), needle) {
			f(parseLogfmt(sc.Text()))
		}
	}
	return sc.Err()
}

// logDurations returns the "duration" field of every line of the log at path whose message is
// msg, in order.
func logDurations(path, msg string) ([]time.Duration, error) {
	var out []time.Duration
	err := logLines(path, msg, func(fields map[string]string) {
		if d, err := time.ParseDuration(fields["duration"]); err == nil {
			out = append(out, d)
		}
	})
	return out, err
}

// logCount counts the lines of the log at path whose message is msg.
func logCount(path, msg string) (int, error) {
	n := 0
	err := logLines(path, msg, func(map[string]string) { n++ })
	return n, err
}

// uploadSample is one second of the distribution: when it ended (seconds from the start),
// and what the seed and all daemons (seed and peers) uploaded in it, in MB/s of frames; Up
// and Down what each daemon sent and received, by host name.
type uploadSample struct {
	T     float64            `json:"t"`
	Seed  float64            `json:"seed_MBps"`
	Total float64            `json:"total_MBps"`
	Up    map[string]float64 `json:"up_MBps,omitempty"`
	Down  map[string]float64 `json:"down_MBps,omitempty"`
}

// uploadMeter samples the daemons' upload every second from the lab's bridge ports.
type uploadMeter struct {
	lab        *netlab.Lab
	seed       string   // the seed's host name
	hosts      []string // every daemon's host name, the seed's included
	start      time.Time
	stop, done chan struct{}
	samples    []uploadSample
}

func startUploadMeter(ctx context.Context, lab *netlab.Lab, seed string, hosts []string, start time.Time) *uploadMeter {
	m := &uploadMeter{lab: lab, seed: seed, hosts: hosts, start: start, stop: make(chan struct{}), done: make(chan struct{})}
	go m.run(ctx)
	return m
}

func (m *uploadMeter) run(ctx context.Context) {
	defer close(m.done)
	prev, err := m.lab.PortCounters(ctx)
	if err != nil {
		return
	}
	prevT := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		cur, err := m.lab.PortCounters(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
		secs := now.Sub(prevT).Seconds()
		var total uint64
		up, down := make(map[string]float64, len(m.hosts)), make(map[string]float64, len(m.hosts))
		for _, h := range m.hosts {
			total += cur[h].Sent - prev[h].Sent
			up[h] = float64(cur[h].Sent-prev[h].Sent) / 1e6 / secs
			down[h] = float64(cur[h].Received-prev[h].Received) / 1e6 / secs
		}
		m.samples = append(m.samples, uploadSample{
			T:     now.Sub(m.start).Seconds(),
			Seed:  float64(cur[m.seed].Sent-prev[m.seed].Sent) / 1e6 / secs,
			Total: float64(total) / 1e6 / secs,
			Up:    up,
			Down:  down,
		})
		prev, prevT = cur, now
	}
}

// Stop ends the sampling and returns the samples.
func (m *uploadMeter) Stop() []uploadSample {
	close(m.stop)
	<-m.done
	return m.samples
}

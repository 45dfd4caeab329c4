package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// Result is what a simulation measured. Everything but Timing is a function of the Config.
type Result struct {
	Config     Config     `json:"config"`
	Population Population `json:"population"`
	Quality    Quality    `json:"quality"`
	Scheduler  Counters   `json:"scheduler"`
	Timing     Timing     `json:"timing"`
}

// Population is what the simulated peers did.
type Population struct {
	// Joins of peers; JoinsSkipped found no live host not yet in their task.
	Joins        int `json:"joins"`
	JoinsSkipped int `json:"joins_skipped"`
	// Completed downloads; peers that LeftEarly, Failed, or were LostWithHost (a host death).
	Completed    int `json:"completed"`
	LeftEarly    int `json:"left_early"`
	Failed       int `json:"failed"`
	LostWithHost int `json:"lost_with_host"`
	// SeedTasks started by seed hosts, SeedsCompleted reading; peers SentBack to the source.
	SeedTasks      int `json:"seed_tasks"`
	SeedsCompleted int `json:"seeds_completed"`
	SentBack       int `json:"sent_back"`
	// HostDeaths (normal), SeedDeaths, hosts Degraded.
	HostDeaths int `json:"host_deaths"`
	SeedDeaths int `json:"seed_deaths"`
	Degraded   int `json:"degraded"`
	// PeakPeers is the most peers the scheduler held at once (Stats.Peers, seed peers
	// included); PeakFetching the most peers downloading at once.
	PeakPeers    int `json:"peak_peers"`
	PeakFetching int `json:"peak_fetching"`
	// NewParents commands received; block Failures reported (dead parent, busy, timeout).
	NewParents int `json:"new_parents"`
	Failures   int `json:"failures"`
	// StreamsEnded counts progress streams the scheduler ended under a live peer, and
	// WatchReopens seed watches it ended: both should be 0.
	StreamsEnded int `json:"streams_ended"`
	WatchReopens int `json:"watch_reopens"`
	// BlocksFromSource (seeds and back-to-source peers) and BlocksFromPeers.
	BlocksFromSource int64 `json:"blocks_from_source"`
	BlocksFromPeers  int64 `json:"blocks_from_peers"`
	// Download time of completed peers, in simulated seconds, from registration.
	DownloadP50 float64 `json:"download_p50_s"`
	DownloadP99 float64 `json:"download_p99_s"`
}

func (p *Population) finish(downloads []time.Duration) {
	if len(downloads) == 0 {
		return
	}
	ds := slices.Clone(downloads)
	slices.Sort(ds)
	p.DownloadP50, p.DownloadP99 = rank(ds, 0.50).Seconds(), rank(ds, 0.99).Seconds()
}

// Counters are the scheduler's own counts (scheduler.Stats) at the end of the run, before
// the probe.
type Counters struct {
	Decisions        uint64 `json:"decisions"`
	SeedTriggers     uint64 `json:"seed_triggers"`
	SentBackToSource uint64 `json:"sent_back_to_source"`
	Reparented       uint64 `json:"reparented"`
	HostsExpired     uint64 `json:"hosts_expired"`
}

// Timing is measured on the wall clock, so it differs from run to run.
type Timing struct {
	// SimulationSeconds is the wall time of the simulation, the probe excluded.
	SimulationSeconds float64 `json:"simulation_seconds"`
	// Decisions made in the core during the simulation, and their durations (lock wait
	// excluded): on registration, GetCandidateParents, reparenting and retries alike.
	Decisions int       `json:"decisions"`
	Decision  Latencies `json:"decision"`
	// AskCalls to GetCandidateParents during the simulation, timed around the call.
	AskCalls int       `json:"ask_calls"`
	Ask      Latencies `json:"ask"`
	// Probe is the throughput probe at the end; nil when skipped.
	Probe *Probe `json:"probe,omitempty"`
}

// Latencies summarises durations, in microseconds.
type Latencies struct {
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
	Maxus float64 `json:"max_us"`
}

func latencies(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Latencies{P50us: us(rank(ds, 0.50)), P99us: us(rank(ds, 0.99)), Maxus: us(ds[len(ds)-1])}
}

// Probe is a burst of GetCandidateParents calls at the end of the run, from Workers
// goroutines at once, on random peers still fetching (in a DAG each call also records the
// peer's new parents, as in a real distribution).
type Probe struct {
	Workers int `json:"workers"`
	// Askers are the peers asked for; RegisteredPeers the scheduler held meanwhile.
	Askers          int `json:"askers"`
	RegisteredPeers int `json:"registered_peers"`
	Calls           int `json:"calls"`
	// Errors among the calls: there should be none.
	Errors int `json:"errors"`
	// Seconds of wall time for all the calls; PerSecond = Calls / Seconds.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// Call latency, around the call (the lock wait included); Decision, in the core.
	Call     Latencies `json:"call"`
	Decision Latencies `json:"decision"`
}

// probe runs the throughput probe.
func (w *world) probe() *Probe {
	var askers []*peer
	for _, p := range w.fetching {
		if !p.gone && !p.source && !p.done {
			askers = append(askers, p)
		}
	}
	pr := &Probe{Workers: w.cfg.ProbeWorkers, Askers: len(askers), RegisteredPeers: w.core.Stats().Peers}
	if len(askers) == 0 {
		return pr
	}
	per := w.cfg.ProbeCalls / w.cfg.ProbeWorkers
	lat := make([][]time.Duration, w.cfg.ProbeWorkers)
	var errs atomic.Int64
	w.rec.probing = true // before the workers start: they happen after this write
	var wg sync.WaitGroup
	start := time.Now()
	for i := range w.cfg.ProbeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(i)))
			ds := make([]time.Duration, 0, per)
			for range per {
				p := askers[rng.IntN(len(askers))]
				t0 := time.Now()
				_, err := w.core.GetCandidateParents(w.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: p.id, TaskId: p.task.id})
				ds = append(ds, time.Since(t0))
				if err != nil {
					errs.Add(1)
				}
			}
			lat[i] = ds
		}()
	}
	wg.Wait()
	pr.Seconds = time.Since(start).Seconds()
	all := slices.Concat(lat...)
	pr.Calls = len(all)
	pr.PerSecond = float64(pr.Calls) / pr.Seconds
	pr.Errors = int(errs.Load())
	pr.Call = latencies(all)
	pr.Decision = latencies(w.rec.probe)
	return pr
}

// WriteSummary writes r for a reader.
func (r *Result) WriteSummary(out io.Writer) error {
	c, pop, q, tm := &r.Config, &r.Population, &r.Quality, &r.Timing
	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	pct := func(n, of int) string {
		if of == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
	}
	shape := string(c.Mode)
	if c.Mode == "tree" {
		shape = fmt.Sprintf("tree, fan-out %d", c.FanOut)
	} else {
		shape = fmt.Sprintf("dag, K = %d", c.Candidates)
	}
	f("simulation (seed %d): %s; %d peers on %d hosts + %d seeds, %d tasks of %d-%d blocks (zipf %.2g), %s simulated in ticks of %s\n",
		c.Seed, shape, c.Peers, c.Hosts, c.SeedHosts, c.Tasks, c.MinBlocks, c.MaxBlocks, c.Skew, c.Duration, c.Tick)
	f("\npopulation\n")
	f("  registered      %d peers joined (%d skipped: no free host), peak %d registered at once (seed peers included), peak %d downloading\n",
		pop.Joins, pop.JoinsSkipped, pop.PeakPeers, pop.PeakFetching)
	f("  churn           %d completed, %d left early, %d failed, %d lost with %d dead hosts (+%d seed hosts died), %d hosts degraded\n",
		pop.Completed, pop.LeftEarly, pop.Failed, pop.LostWithHost, pop.HostDeaths, pop.SeedDeaths, pop.Degraded)
	f("  download time   p50 %.1f s, p99 %.1f s (simulated, registration to complete)\n", pop.DownloadP50, pop.DownloadP99)
	f("  registry reads  %s of %d blocks moved (%d seed tasks, %d peers sent back to the source)\n",
		pct(int(pop.BlocksFromSource), int(pop.BlocksFromSource+pop.BlocksFromPeers)), pop.BlocksFromSource+pop.BlocksFromPeers, pop.SeedTasks, pop.SentBack)
	f("  scheduler       %d decisions, %d peers reparented, %d hosts expired, %d seed triggers, %d new-parent commands, %d block failures reported\n",
		r.Scheduler.Decisions, r.Scheduler.Reparented, r.Scheduler.HostsExpired, r.Scheduler.SeedTriggers, pop.NewParents, pop.Failures)
	f("  anomalies       %d streams ended under a live peer, %d seed watches reopened (want 0)\n", pop.StreamsEnded, pop.WatchReopens)

	f("\ntopology quality (%d task states, %d peer states, one every %s)\n", q.TaskStates, q.PeerStates, c.SampleEvery)
	d := q.Depth
	if c.Mode == "tree" {
		f("  %-15s largest task %d peers: %d levels, least possible %d (%s); worst state %d peers: %d levels, bound %d; %d task states over their bound\n",
			"height", q.LargestTask, q.LargestHeight, q.LargestBound, boundName(c.FanOut), q.WorstTask, q.WorstHeight, q.WorstBound, q.OverBound)
	} else {
		f("  %-15s largest task %d peers: longest parent chain %d levels (a tree's least height %d, %s); worst state %d peers: %d levels vs %d; %d task states deeper than a tree\n",
			"depth", q.LargestTask, q.LargestHeight, q.LargestBound, boundName(c.FanOut), q.WorstTask, q.WorstHeight, q.WorstBound, q.OverBound)
	}
	f("  %-15s level of fetching peers (root 1): mean %.2f, p50 %d, p90 %d, p99 %d, max %d\n", "", d.Mean, d.P50, d.P90, d.P99, d.Max)
	f("  %-15s %d (peer states needing a parent with none while the task had a provider)\n", "orphans", q.Orphans)
	f("  %-15s %d cycles, %d dangling parent ids, %d tree states without exactly one root\n", "graph", q.Cycles, q.Dangling, q.BadRoots)
	f("  %-15s max %d per parent, limit %d (%s); %d parent states over it\n", "children", q.Children.Max, q.ChildLimit, limitKind(c), q.OverLimit)
	d = q.Children
	f("  %-15s %d parent states: mean %.2f, p50 %d, p90 %d, p99 %d, max %d\n", "load balance", d.N, d.Mean, d.P50, d.P90, d.P99, d.Max)
	labels := HistogramLabels()
	var hist []string
	for i, n := range d.Histogram {
		hist = append(hist, fmt.Sprintf("%s: %s", labels[i], pct(n, d.N)))
	}
	f("  %-15s children per parent  %s\n", "", strings.Join(hist, "  "))
	f("  %-15s %s of %d fetching peer states have a seed among their parents, %s a source (seed or back-to-source); %s have a parent\n",
		"seed parents", pct(q.WithSeedParent, q.WithParent), q.Fetching, pct(q.WithSourceParent, q.WithParent), pct(q.WithParent, q.Fetching))

	f("\ntiming (wall clock, %.1f s for the simulation)\n", tm.SimulationSeconds)
	f("  decisions       %d in the core: p50 %s, p99 %s, max %s (lock wait excluded)\n", tm.Decisions, us(tm.Decision.P50us), us(tm.Decision.P99us), us(tm.Decision.Maxus))
	f("  asks            %d GetCandidateParents calls: p50 %s, p99 %s, max %s\n", tm.AskCalls, us(tm.Ask.P50us), us(tm.Ask.P99us), us(tm.Ask.Maxus))
	if p := tm.Probe; p != nil {
		f("  probe           %d GetCandidateParents calls (%d errors) from %d goroutines on %d fetching peers, %d registered:\n", p.Calls, p.Errors, p.Workers, p.Askers, p.RegisteredPeers)
		f("                  %.0f decisions/s; call p50 %s, p99 %s, max %s; in the core p50 %s, p99 %s\n",
			p.PerSecond, us(p.Call.P50us), us(p.Call.P99us), us(p.Call.Maxus), us(p.Decision.P50us), us(p.Decision.P99us))
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func boundName(fanOut int) string {
	if fanOut == 2 {
		return "⌈log₂(N+1)⌉"
	}
	return fmt.Sprintf("complete %d-ary tree", fanOut)
}

func limitKind(c *Config) string {
	if c.Mode == "tree" {
		return "fan-out, hard"
	}
	return "child limit of the load term, soft"
}

// us formats microseconds.
func us(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f ms", v/1000)
	default:
		return fmt.Sprintf("%.1f µs", v)
	}
}

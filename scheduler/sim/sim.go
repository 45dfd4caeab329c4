package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// The data plane's constants (see the package documentation).
const (
	blockSize     = 4 << 20
	peerDownload  = 40  // blocks/s a peer fetches at most
	sourceRate    = 20  // blocks/s a peer or seed reads from the registry
	seedUpload    = 250 // blocks/s
	seedSlots     = 64
	hostSlots     = 16
	idcs          = 4
	degradeFactor = 10
	// A departure is replaced within replaceWithin; a dead host comes back after 30 to
	// 90 s (after the scheduler removed it: 15 to 20 s).
	replaceWithin = 10 * time.Second
	backAfterMin  = 30 * time.Second
	backAfterMax  = 90 * time.Second
)

// hostUploads are the upload capacities of normal hosts, in blocks/s.
func hostUploads() []int { return []int{10, 20, 40} }

type host struct {
	idx    int // in world.hosts
	id     string
	seed   bool
	upload int     // blocks/s
	slots  int     // upload slots announced
	slow   float64 // block time factor: 1, or degradeFactor once degraded
	dead   bool
	peers  []*peer // may hold gone peers until the next keepalive
	watch  *scheduler.Watch

	credit   float64 // fraction of a block of upload carried to the next tick
	upLeft   int     // blocks it may still upload this tick
	served   int     // transfers this tick
	lastTick int     // transfers last tick
	uploaded int     // blocks since its last keepalive
}

type task struct {
	id     string
	blocks int
	source *schedulerv1.TaskSource
	hosts  []bool // by host index: the host has a peer in the task
}

type peer struct {
	id       string
	task     *task
	host     *host
	pr       *scheduler.Progress
	have     int      // blocks [0, have) held: a layer is read as a stream
	parents  []string // the scheduler's last answer
	excluded []string // parents it could not reach since that answer
	source   bool     // reads the registry
	seed     bool
	done     bool
	gone     bool
	joined   time.Duration
	lastGain time.Duration
	lastAsk  time.Duration
}

// world is one simulation. It is used by one goroutine, but for the probe's workers.
type world struct {
	cfg   Config
	rng   *rand.Rand
	core  *scheduler.Scheduler
	clk   *clock.Fake
	ctx   context.Context
	empty context.Context // cancelled: Next returns at once when nothing is pending
	rec   *recorder

	now       time.Duration
	tick      int
	kaTicks   int // ticks per keepalive interval
	dlBudget  int // blocks a peer fetches per tick
	srcBudget int
	events    events
	seq       int

	hosts      []*host // normal hosts, then seed hosts
	normal     int     // len of the normal hosts prefix
	tasks      []*task
	byTaskID   map[string]*task
	popularity []float64 // cumulative, for drawing a task
	byID       map[string]*peer
	fetching   []*peer // peers not done, in no particular order

	quality   *quality
	pop       Population
	downloads []time.Duration // simulated, join to complete
	asks      []time.Duration // wall, GetCandidateParents calls
}

// recorder keeps the duration of every decision the core reports. The core calls it with
// its lock held, so calls never overlap.
type recorder struct {
	probing    bool
	run, probe []time.Duration
}

func (r *recorder) Observe(seconds float64) {
	d := time.Duration(seconds * float64(time.Second))
	if r.probing {
		r.probe = append(r.probe, d)
	} else {
		r.run = append(r.run, d)
	}
}

// Run runs the simulation cfg describes and returns what it measured. It fails on an
// invalid cfg, when ctx ends, and on any error of the scheduler, which a well-behaved
// population of peers never gets.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulation config: %w", err)
	}
	w := &world{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)),
		clk:      clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		ctx:      ctx,
		rec:      &recorder{},
		byTaskID: make(map[string]*task),
		byID:     make(map[string]*peer),
	}
	empty, cancel := context.WithCancel(context.Background())
	cancel()
	w.empty = empty
	opts := append(slices.Clone(cfg.Options),
		scheduler.WithClock(w.clk), scheduler.WithRandSeed(cfg.Seed), scheduler.WithManualSweep(),
		scheduler.WithTopology(cfg.Mode, cfg.FanOut), scheduler.WithCandidates(cfg.Candidates),
		scheduler.WithSampleSize(max(scheduler.DefaultSampleSize, cfg.Candidates)),
		scheduler.WithDecisionObserver(w.rec))
	core, err := scheduler.New(opts...)
	if err != nil {
		return nil, err
	}
	defer core.Close()
	w.core = core
	limit := cfg.FanOut
	if cfg.Mode == scheduler.ModeDAG {
		limit = selection.DefaultChildLimit
	}
	w.quality = newQuality(cfg.Mode, cfg.FanOut, limit)
	start := time.Now()
	if err := w.setup(); err != nil {
		return nil, err
	}
	nextSample := cfg.SampleEvery
	for w.now+cfg.Tick <= cfg.Duration {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := w.step(); err != nil {
			return nil, fmt.Errorf("at %s: %w", w.now, err)
		}
		if w.now >= nextSample {
			w.sample()
			nextSample += cfg.SampleEvery
		}
	}
	w.sample()
	res := &Result{Config: cfg, Population: w.pop, Quality: w.quality.result()}
	res.Population.finish(w.downloads)
	res.Timing.SimulationSeconds = time.Since(start).Seconds()
	res.Timing.Decisions = len(w.rec.run)
	res.Timing.Decision = latencies(w.rec.run)
	res.Timing.AskCalls = len(w.asks)
	res.Timing.Ask = latencies(w.asks)
	st := core.Stats()
	res.Scheduler = Counters{
		Decisions: st.Decisions, SeedTriggers: st.SeedTriggers, SentBackToSource: st.SentBackToSource,
		Reparented: st.Reparented, HostsExpired: st.HostsExpired,
	}
	if cfg.ProbeCalls > 0 {
		res.Timing.Probe = w.probe()
	}
	return res, nil
}

// setup announces the hosts, opens the seeds' watches, and schedules the first wave of
// peers, the deaths and the degradations.
func (w *world) setup() error {
	cfg := w.cfg
	w.kaTicks = max(1, int(w.core.KeepaliveInterval()/cfg.Tick))
	w.dlBudget = max(1, int(peerDownload*cfg.Tick.Seconds()))
	w.srcBudget = max(1, int(sourceRate*cfg.Tick.Seconds()))
	ups := hostUploads()
	for i := range cfg.Hosts + cfg.SeedHosts {
		h := &host{idx: i, slow: 1}
		if i < cfg.Hosts {
			h.id, h.upload, h.slots = fmt.Sprintf("host-%05d", i), ups[w.rng.IntN(len(ups))], hostSlots
		} else {
			h.id, h.upload, h.slots, h.seed = fmt.Sprintf("seed-%d", i-cfg.Hosts), seedUpload, seedSlots, true
		}
		w.hosts = append(w.hosts, h)
		if err := w.announce(h); err != nil {
			return err
		}
	}
	w.normal = cfg.Hosts
	// Tasks, their popularity (Zipf) and sizes; the first wave of peers in each task's burst.
	total := 0.0
	for i := range cfg.Tasks {
		id := fmt.Sprintf("sha256:%064x", i+1)
		t := &task{
			id:     id,
			blocks: cfg.MinBlocks + w.rng.IntN(cfg.MaxBlocks-cfg.MinBlocks+1),
			source: &schedulerv1.TaskSource{Registry: "registry.sim", Repository: fmt.Sprintf("app-%d", i), BlobDigest: id},
			hosts:  make([]bool, len(w.hosts)),
		}
		w.tasks = append(w.tasks, t)
		w.byTaskID[id] = t
		total += 1 / math.Pow(float64(i+1), cfg.Skew)
		w.popularity = append(w.popularity, total)
	}
	starts := make([]time.Duration, cfg.Tasks)
	for i := range starts {
		starts[i] = w.uniform(0, cfg.Ramp)
	}
	for range cfg.Peers {
		i := w.drawTask()
		w.schedule(event{at: starts[i] + w.uniform(0, cfg.Burst), kind: evJoin, task: w.tasks[i]})
	}
	// Failures happen once tasks are under way, early enough to see their effect.
	late := max(cfg.Duration-backAfterMax, cfg.Ramp/4)
	for _, i := range w.rng.Perm(cfg.Hosts)[:int(math.Round(cfg.HostDeaths*float64(cfg.Hosts)))] {
		w.schedule(event{at: w.uniform(cfg.Ramp/4, late), kind: evHostDeath, host: w.hosts[i]})
	}
	for _, i := range w.rng.Perm(cfg.SeedHosts)[:cfg.SeedDeaths] {
		w.schedule(event{at: w.uniform(cfg.Ramp/2, late), kind: evHostDeath, host: w.hosts[cfg.Hosts+i]})
	}
	for _, i := range w.rng.Perm(cfg.Hosts)[:int(math.Round(cfg.Degrade*float64(cfg.Hosts)))] {
		w.schedule(event{at: w.uniform(0, cfg.Duration), kind: evDegrade, host: w.hosts[i]})
	}
	return nil
}

// announce announces h, sends its first keepalive, and opens its watch if it is a seed.
func (w *world) announce(h *host) error {
	_, err := w.core.AnnounceHost(w.ctx, &schedulerv1.AnnounceHostRequest{
		HostId:         h.id,
		Hostname:       h.id,
		BlockAddress:   h.id + ":65002",
		Idc:            fmt.Sprintf("idc-%d", h.idx%idcs),
		Location:       fmt.Sprintf("region-%d/zone-%d/rack-%d", h.idx%2, h.idx%idcs, h.idx%64),
		Type:           hostType(h.seed),
		UploadCapacity: uint64(h.upload) * blockSize,
		UploadSlots:    uint32(h.slots),
	})
	if err != nil {
		return fmt.Errorf("announce %s: %w", h.id, err)
	}
	if err := w.keepalive(h); err != nil {
		return err
	}
	if h.seed {
		if h.watch, err = w.core.WatchHost(w.ctx, &schedulerv1.WatchHostRequest{HostId: h.id}); err != nil {
			return fmt.Errorf("watch %s: %w", h.id, err)
		}
	}
	return nil
}

func hostType(seed bool) schedulerv1.HostType {
	if seed {
		return schedulerv1.HostType_HOST_TYPE_SEED
	}
	return schedulerv1.HostType_HOST_TYPE_NORMAL
}

// keepalive reports h's state over the last interval: upload rate, free slots (by the
// transfers of its last tick) and load.
func (w *world) keepalive(h *host) error {
	interval := w.core.KeepaliveInterval().Seconds()
	rate := float64(h.uploaded) * blockSize / interval
	h.uploaded = 0
	live := h.peers[:0]
	for _, p := range h.peers {
		if !p.gone {
			live = append(live, p)
		}
	}
	clear(h.peers[len(live):])
	h.peers = live
	_, err := w.core.Keepalive(w.ctx, &schedulerv1.KeepaliveRequest{HostId: h.id, State: &schedulerv1.HostState{
		UploadRate:      uint64(rate),
		FreeUploadSlots: uint32(max(0, h.slots-h.lastTick)),
		Load:            min(1, rate/(float64(h.upload)*blockSize)),
		TaskCount:       uint32(len(live)),
	}})
	if err != nil {
		return fmt.Errorf("keepalive %s: %w", h.id, err)
	}
	return nil
}

// step advances the simulation by one tick.
func (w *world) step() error {
	w.now += w.cfg.Tick
	w.tick++
	w.clk.Advance(w.cfg.Tick)
	for _, h := range w.hosts {
		h.lastTick, h.served = h.served, 0
		h.credit += float64(h.upload) * w.cfg.Tick.Seconds() / h.slow
		h.upLeft = int(h.credit)
		h.credit -= float64(h.upLeft)
	}
	for e := w.due(); e != nil; e = w.due() {
		if err := w.handle(e); err != nil {
			return err
		}
	}
	for _, h := range w.hosts {
		if !h.dead && (w.tick+h.idx)%w.kaTicks == 0 {
			if err := w.keepalive(h); err != nil {
				return err
			}
		}
	}
	if w.tick%w.kaTicks == 0 {
		w.core.Sweep(w.ctx)
	}
	for _, h := range w.hosts[w.normal:] {
		if err := w.seedCommands(h); err != nil {
			return err
		}
	}
	w.rng.Shuffle(len(w.fetching), func(i, j int) { w.fetching[i], w.fetching[j] = w.fetching[j], w.fetching[i] })
	kept := w.fetching[:0]
	for _, p := range w.fetching {
		if p.gone {
			continue
		}
		w.commands(p)
		if p.gone {
			continue
		}
		if err := w.transfer(p); err != nil {
			return err
		}
		if !p.done {
			kept = append(kept, p)
		}
	}
	clear(w.fetching[len(kept):])
	w.fetching = kept
	w.pop.PeakFetching = max(w.pop.PeakFetching, len(w.fetching))
	w.pop.PeakPeers = max(w.pop.PeakPeers, w.core.Stats().Peers)
	return nil
}

func (w *world) handle(e *event) error {
	switch e.kind {
	case evJoin:
		return w.join(e.task)
	case evLeave:
		p := e.peer
		if p.gone {
			return nil
		}
		if !p.done {
			w.pop.LeftEarly++
		}
		if _, err := w.core.LeaveTask(w.ctx, &schedulerv1.LeaveTaskRequest{PeerId: p.id, TaskId: p.task.id}); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
		w.drop(p)
		w.replace()
	case evFail:
		p := e.peer
		if p.gone || p.done {
			return nil
		}
		w.pop.Failed++
		if err := w.report(p, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Failed{Failed: &schedulerv1.PeerFailed{Message: "simulated failure"}}}); err != nil {
			return err
		}
		w.drop(p)
		w.replace()
	case evHostDeath:
		h := e.host
		if h.dead {
			return nil
		}
		h.dead = true
		if h.seed {
			w.pop.SeedDeaths++
		} else {
			w.pop.HostDeaths++
		}
		// The process is gone: its streams break, which closes them on the scheduler's
		// side; the host and its peers stay registered until they miss their keepalives.
		if h.watch != nil {
			h.watch.Close()
			h.watch = nil
		}
		for _, p := range h.peers {
			if p.gone {
				continue
			}
			w.drop(p)
			if !p.seed {
				w.pop.LostWithHost++
				w.replace()
			}
		}
		h.peers = nil
		w.schedule(event{at: w.now + w.uniform(backAfterMin, backAfterMax), kind: evHostBack, host: h})
	case evHostBack:
		// A restarted daemon with a fresh state. It leaves first, in case the scheduler has
		// not removed it yet (a keepalive configuration slower than the default): the
		// peers it had would otherwise stay registered with nobody behind them.
		h := e.host
		h.dead, h.uploaded, h.credit = false, 0, 0
		if _, err := w.core.LeaveHost(w.ctx, &schedulerv1.LeaveHostRequest{HostId: h.id}); err != nil {
			return fmt.Errorf("leave host %s: %w", h.id, err)
		}
		return w.announce(h)
	case evDegrade:
		if e.host.slow == 1 {
			e.host.slow = degradeFactor
			w.pop.Degraded++
		}
	}
	return nil
}

// sample examines every task's topology as the scheduler holds it.
func (w *world) sample() {
	for _, t := range w.tasks {
		info, err := w.core.Inspect(t.id)
		if err != nil {
			continue // no peer now
		}
		w.quality.add(info)
	}
}

// drawTask returns the index of a task drawn by popularity.
func (w *world) drawTask() int {
	x := w.rng.Float64() * w.popularity[len(w.popularity)-1]
	return min(sort.SearchFloat64s(w.popularity, x), len(w.popularity)-1)
}

// uniform returns a duration in [lo, hi).
func (w *world) uniform(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

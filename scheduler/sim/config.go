package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Config sizes and shapes a simulation; see the package documentation for the model.
// DefaultConfig returns the one cmd/schedsim runs.
type Config struct {
	// Seed makes the run reproducible: the same Seed, the same run.
	Seed uint64 `json:"seed"`
	// Mode of every task, and FanOut of trees.
	Mode   scheduler.Mode `json:"mode"`
	FanOut int            `json:"fan_out"`
	// Candidates is K, the parents per decision (scheduler.WithCandidates).
	Candidates int `json:"candidates"`
	// Options are more scheduler options (from a configuration file, say), applied before
	// the simulation's own (clock, seed, manual sweep, topology, candidates).
	Options []scheduler.Option `json:"-"`

	// Peers join in the first wave; every peer that leaves is replaced, so about this many
	// stay registered.
	Peers int `json:"peers"`
	// Hosts (normal) and SeedHosts.
	Hosts     int `json:"hosts"`
	SeedHosts int `json:"seed_hosts"`
	// Tasks, their popularity's Zipf exponent, and their sizes in 4 MiB blocks.
	Tasks     int     `json:"tasks"`
	Skew      float64 `json:"skew"`
	MinBlocks int     `json:"min_blocks"`
	MaxBlocks int     `json:"max_blocks"`

	// Duration of the simulated run; tasks start during Ramp, and a task's first peers
	// arrive within Burst of its start.
	Duration time.Duration `json:"duration_ns"`
	Ramp     time.Duration `json:"ramp_ns"`
	Burst    time.Duration `json:"burst_ns"`
	// Tick is the simulated time step.
	Tick time.Duration `json:"tick_ns"`

	// Linger is the mean time a finished peer keeps serving before it leaves.
	Linger time.Duration `json:"linger_ns"`
	// LeaveEarly and Fail are the fractions of peers that leave before finishing, and that
	// give up (PeerFailed).
	LeaveEarly float64 `json:"leave_early"`
	Fail       float64 `json:"fail"`
	// HostDeaths is the fraction of normal hosts that go silent during the run; SeedDeaths
	// the number of seed hosts that do.
	HostDeaths float64 `json:"host_deaths"`
	SeedDeaths int     `json:"seed_deaths"`
	// Degrade is the fraction of hosts whose uploads become 10 times slower.
	Degrade float64 `json:"degrade"`
	// Loss is the probability that a block request times out.
	Loss float64 `json:"loss"`
	// Stall is how long a peer that gets nothing waits before asking for new parents.
	Stall time.Duration `json:"stall_ns"`

	// SampleEvery is the interval between quality samples.
	SampleEvery time.Duration `json:"sample_every_ns"`
	// ProbeCalls GetCandidateParents calls from ProbeWorkers goroutines at the end; 0 calls
	// skip the probe.
	ProbeCalls   int `json:"probe_calls"`
	ProbeWorkers int `json:"probe_workers"`
}

// DefaultConfig returns the default simulation: 10,000 peers on 2,500 hosts and 3 seeds
// over 100 tasks, 5 simulated minutes, in mode.
func DefaultConfig(mode scheduler.Mode) Config {
	return Config{
		Seed:         1,
		Mode:         mode,
		FanOut:       scheduler.DefaultFanOut,
		Candidates:   scheduler.DefaultCandidates,
		Peers:        10_000,
		Hosts:        2_500,
		SeedHosts:    3,
		Tasks:        100,
		Skew:         0.8,
		MinBlocks:    32,
		MaxBlocks:    256,
		Duration:     5 * time.Minute,
		Ramp:         2 * time.Minute,
		Burst:        20 * time.Second,
		Tick:         250 * time.Millisecond,
		Linger:       2 * time.Minute,
		LeaveEarly:   0.05,
		Fail:         0.01,
		HostDeaths:   0.05,
		SeedDeaths:   1,
		Degrade:      0.05,
		Loss:         0.002,
		Stall:        2 * time.Second,
		SampleEvery:  10 * time.Second,
		ProbeCalls:   200_000,
		ProbeWorkers: 2,
	}
}

// Validate checks the values that would make the simulation meaningless.
func (c *Config) Validate() error {
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Mode != scheduler.ModeDAG && c.Mode != scheduler.ModeTree, "mode %q: want %q or %q", c.Mode, scheduler.ModeDAG, scheduler.ModeTree)
	check(c.FanOut < 1, "fan-out %d: want at least 1", c.FanOut)
	check(c.Candidates < 1, "candidates %d: want at least 1", c.Candidates)
	check(c.Peers < 1, "peers %d: want at least 1", c.Peers)
	check(c.Tasks < 1, "tasks %d: want at least 1", c.Tasks)
	check(c.Hosts < 2, "hosts %d: want at least 2", c.Hosts)
	check(c.SeedHosts < 0 || c.SeedDeaths < 0 || c.SeedDeaths > c.SeedHosts, "seed hosts %d, seed deaths %d: want 0 ≤ deaths ≤ hosts", c.SeedHosts, c.SeedDeaths)
	check(c.MinBlocks < 1 || c.MaxBlocks < c.MinBlocks, "blocks %d to %d: want 1 ≤ min ≤ max", c.MinBlocks, c.MaxBlocks)
	check(c.Skew < 0, "skew %v: want at least 0", c.Skew)
	check(c.Tick <= 0 || c.Duration < c.Tick, "tick %s, duration %s: want 0 < tick ≤ duration", c.Tick, c.Duration)
	check(c.Ramp < 0 || c.Burst < 0 || c.Linger < 0 || c.Stall < 0, "ramp, burst, linger and stall: want durations ≥ 0")
	check(c.SampleEvery < c.Tick, "sample interval %s: want at least a tick (%s)", c.SampleEvery, c.Tick)
	for _, f := range []struct {
		name string
		v    float64
	}{{"leave-early", c.LeaveEarly}, {"fail", c.Fail}, {"host-deaths", c.HostDeaths}, {"degrade", c.Degrade}, {"loss", c.Loss}} {
		check(f.v < 0 || f.v > 1, "%s %v: want a fraction in [0, 1]", f.name, f.v)
	}
	check(c.ProbeCalls < 0 || c.ProbeCalls > 0 && c.ProbeWorkers < 1, "probe: %d calls from %d workers: want calls ≥ 0 and a worker", c.ProbeCalls, c.ProbeWorkers)
	return errors.Join(errs...)
}

package sim

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

func TestMain(m *testing.M) {
	_ = log.SetLevel("error")
	os.Exit(m.Run())
}

// small is a simulation that runs in a fraction of a second (a few seconds under -race)
// with every kind of event: flash crowds, replacements, early leaves, failures, host and
// seed deaths, slow hosts and lost requests.
func small(mode scheduler.Mode) Config {
	c := DefaultConfig(mode)
	c.Peers, c.Hosts, c.SeedHosts, c.Tasks = 1000, 250, 2, 16
	c.Duration, c.Ramp, c.Burst = 2*time.Minute, 40*time.Second, 10*time.Second
	c.SampleEvery = 5 * time.Second
	c.HostDeaths, c.Degrade = 0.1, 0.1
	c.ProbeCalls = 2000
	return c
}

func TestSimulation(t *testing.T) {
	for _, mode := range []scheduler.Mode{scheduler.ModeDAG, scheduler.ModeTree} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := small(mode)
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			q, pop := res.Quality, res.Population
			checks := []struct {
				name      string
				got, want int
				atLeast   bool // got ≥ want rather than got = want
			}{
				{"task states sampled", q.TaskStates, 100, true},
				{"orphans", q.Orphans, 0, false},
				{"cycles", q.Cycles, 0, false},
				{"dangling parent ids", q.Dangling, 0, false},
				{"tree states without one root", q.BadRoots, 0, false},
				{"streams ended under a live peer", pop.StreamsEnded, 0, false},
				{"seed watches reopened", pop.WatchReopens, 0, false},
				{"joins (replacements included)", pop.Joins, cfg.Peers + 1, true},
				{"completed", pop.Completed, cfg.Peers / 2, true},
				{"host deaths", pop.HostDeaths, 25, false},
				{"seed deaths", pop.SeedDeaths, 1, false},
				{"hosts expired", int(res.Scheduler.HostsExpired), pop.HostDeaths + pop.SeedDeaths, false},
				{"peers reparented", int(res.Scheduler.Reparented), 1, true},
				{"seed tasks", pop.SeedTasks, cfg.Tasks, true},
				{"peers with a parent", q.WithParent, q.Fetching, false},
				{"decisions observed", res.Timing.Decisions, int(res.Scheduler.Decisions), false},
				{"probe calls", res.Timing.Probe.Calls, cfg.ProbeCalls, false},
				{"probe errors", res.Timing.Probe.Errors, 0, false},
			}
			if mode == scheduler.ModeTree {
				checks = append(checks, []struct {
					name      string
					got, want int
					atLeast   bool
				}{
					{"tree states over the height bound", q.OverBound, 0, false},
					{"largest tree's height", q.LargestHeight, q.LargestBound, false},
					{"parents over the fan-out", q.OverLimit, 0, false},
				}...)
			}
			for _, c := range checks {
				if c.atLeast && c.got < c.want || !c.atLeast && c.got != c.want {
					rel := "="
					if c.atLeast {
						rel = "≥"
					}
					t.Errorf("%s: got %d; want %s %d", c.name, c.got, rel, c.want)
				}
			}
			var out strings.Builder
			if err := res.WriteSummary(&out); err != nil {
				t.Fatal(err)
			}
			if t.Failed() {
				t.Log("\n" + out.String())
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	cfg := small(scheduler.ModeDAG)
	cfg.Duration, cfg.ProbeCalls = 40*time.Second, 0
	run := func(seed uint64) *Result {
		t.Helper()
		cfg.Seed = seed
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		res.Timing = Timing{}
		return res
	}
	a, b := run(7), run(7)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs with seed 7 differ:\n%+v\n%+v", a, b)
	}
	if c := run(8); reflect.DeepEqual(a.Population, c.Population) {
		t.Fatal("runs with seeds 7 and 8 are the same; want the seed to matter")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"mode", func(c *Config) { c.Mode = "ring" }, "mode"},
		{"seed deaths above seeds", func(c *Config) { c.SeedHosts, c.SeedDeaths = 1, 2 }, "seed deaths"},
		{"blocks", func(c *Config) { c.MinBlocks, c.MaxBlocks = 10, 5 }, "blocks"},
		{"fraction", func(c *Config) { c.Loss = 2 }, "loss"},
		{"tick", func(c *Config) { c.Tick = 0 }, "tick"},
		{"probe without workers", func(c *Config) { c.ProbeWorkers = 0 }, "probe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig(scheduler.ModeDAG)
			tt.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want an error naming %q", err, tt.want)
			}
		})
	}
	c := DefaultConfig(scheduler.ModeTree)
	if err := c.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

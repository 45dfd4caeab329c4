// Command schedsim runs the scheduler simulation of package sim: the real scheduling code,
// in process on a fake clock, with thousands of peers joining and leaving over many tasks,
// and prints the quality of the topologies it built and how fast it decided.
//
//	go run ./scheduler/sim/cmd/schedsim -mode dag -peers 10000 -seed 1
//	go run ./scheduler/sim/cmd/schedsim -mode tree -json
//
// The same -seed gives the same run (timings aside). -config reads a p2p-scheduler TOML
// file for the scheduler's selection weights, limits and keepalive; -mode, -fanout and
// -candidates override it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "schedsim:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := sim.DefaultConfig(scheduler.ModeDAG)
	var (
		mode       = string(cfg.Mode)
		configPath string
		asJSON     bool
	)
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the run: the same seed, the same run")
	flag.StringVar(&mode, "mode", mode, `topology of every task: "dag" or "tree"`)
	flag.IntVar(&cfg.FanOut, "fanout", cfg.FanOut, "children per tree node")
	flag.IntVar(&cfg.Candidates, "candidates", cfg.Candidates, "K: parents per decision")
	flag.StringVar(&configPath, "config", "", "p2p-scheduler TOML file for the scheduler's other settings")
	flag.IntVar(&cfg.Peers, "peers", cfg.Peers, "peers in the first wave; departures are replaced")
	flag.IntVar(&cfg.Hosts, "hosts", cfg.Hosts, "normal hosts")
	flag.IntVar(&cfg.SeedHosts, "seeds", cfg.SeedHosts, "seed hosts")
	flag.IntVar(&cfg.Tasks, "tasks", cfg.Tasks, "tasks (layers)")
	flag.Float64Var(&cfg.Skew, "skew", cfg.Skew, "Zipf exponent of task popularity")
	flag.IntVar(&cfg.MinBlocks, "min-blocks", cfg.MinBlocks, "fewest 4 MiB blocks of a task")
	flag.IntVar(&cfg.MaxBlocks, "max-blocks", cfg.MaxBlocks, "most 4 MiB blocks of a task")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "simulated time")
	flag.DurationVar(&cfg.Ramp, "ramp", cfg.Ramp, "tasks start within this")
	flag.DurationVar(&cfg.Burst, "burst", cfg.Burst, "a task's first peers arrive within this of its start")
	flag.DurationVar(&cfg.Tick, "tick", cfg.Tick, "simulated time step")
	flag.DurationVar(&cfg.Linger, "linger", cfg.Linger, "mean time a finished peer keeps serving")
	flag.Float64Var(&cfg.LeaveEarly, "leave-early", cfg.LeaveEarly, "fraction of peers that leave before finishing")
	flag.Float64Var(&cfg.Fail, "fail", cfg.Fail, "fraction of peers that give up")
	flag.Float64Var(&cfg.HostDeaths, "host-deaths", cfg.HostDeaths, "fraction of hosts that go silent")
	flag.IntVar(&cfg.SeedDeaths, "seed-deaths", cfg.SeedDeaths, "seed hosts that go silent")
	flag.Float64Var(&cfg.Degrade, "degrade", cfg.Degrade, "fraction of hosts that become 10x slower")
	flag.Float64Var(&cfg.Loss, "loss", cfg.Loss, "probability that a block request times out")
	flag.DurationVar(&cfg.Stall, "stall", cfg.Stall, "a peer that gets nothing this long asks for parents")
	flag.DurationVar(&cfg.SampleEvery, "sample", cfg.SampleEvery, "interval between topology samples")
	flag.IntVar(&cfg.ProbeCalls, "probe", cfg.ProbeCalls, "GetCandidateParents calls of the final throughput probe (0: none)")
	flag.IntVar(&cfg.ProbeWorkers, "workers", cfg.ProbeWorkers, "goroutines of the probe")
	flag.BoolVar(&asJSON, "json", false, "print the result as JSON")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	cfg.Mode = scheduler.Mode(mode)
	if configPath != "" {
		c, err := scheduler.LoadConfig(configPath)
		if err != nil {
			return err
		}
		cfg.Options = c.Options()
	}
	_ = log.SetLevel("error") // the scheduler's logs are not the result
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := sim.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.WriteSummary(os.Stdout)
}

// Package sim drives the real scheduling code (scheduler.Scheduler, in process, on a fake
// clock, no network) with a population of peers far larger than any test machine can host
// as processes, and measures the quality of the trees and DAGs it builds, and how fast it
// decides. cmd/schedsim is its command line; the package test runs a small simulation.
//
// # The model
//
// Time advances in ticks of Config.Tick on a clock.Fake; the scheduler's sweeper is manual
// (scheduler.WithManualSweep) and runs every keepalive interval, so a run is a function of
// Config alone: the same Seed gives the same peers, the same decisions and the same quality
// figures (wall-clock timings aside).
//
//   - Hosts: Config.Hosts normal hosts spread over 4 IDCs and a region/zone/rack location,
//     with upload capacities of 10, 20 or 40 blocks/s and 16 upload slots, and
//     Config.SeedHosts seed hosts (250 blocks/s, 64 slots) that watch for SeedTasks. Each
//     sends a keepalive every interval with its measured upload rate, free slots and load.
//   - Tasks: Config.Tasks layers of MinBlocks to MaxBlocks blocks of 4 MiB, each with a
//     source, whose popularity follows a Zipf law (Config.Skew). Each task starts at a random
//     moment of the ramp and its first peers arrive within Config.Burst: a flash crowd.
//   - Peers: Config.Peers join in that first wave, each on a random host not yet in the
//     task; every peer that leaves is replaced, a few seconds later, by a new peer of a task
//     drawn by popularity, so that about Config.Peers stay registered. A peer registers,
//     opens its progress stream, and each tick downloads from the parents the scheduler gave
//     it (its registration answer, NewParents on its stream, or GetCandidateParents), up to
//     40 blocks/s, limited by each parent's upload capacity and slots, taking the blocks in
//     order (a layer is read as a stream, so every peer holds a prefix of its task); a peer
//     told to go back to the source, or a seed peer, reads the registry at 20 blocks/s. It
//     reports every transfer (NewBlocks with the parent and its duration), failures to reach
//     a dead parent (connection) and random timeouts (Config.Loss), and PeerFinished. A peer
//     that gets nothing for Config.Stall asks GetCandidateParents, excluding the parents it
//     could not reach. A finished peer keeps serving for a random time (mean Config.Linger)
//     and leaves; Config.LeaveEarly of peers leave before finishing, Config.Fail of them give
//     up (PeerFailed).
//   - Failures: Config.HostDeaths of the normal hosts, and Config.SeedDeaths seed hosts, go
//     silent at a random moment (no keepalive, streams broken, no uploads): their children
//     see connection failures, the scheduler marks them failing, and its sweeper removes the
//     host 15–20 s later; they come back 30–90 s later as new hosts. Config.Degrade of the
//     hosts become 10 times slower at a random moment (the slow-parent rule).
//
// # What is measured
//
// Every Config.SampleEvery, each task's topology as the scheduler holds it
// (Scheduler.Inspect) is checked: height (tree) or depth (longest parent chain, DAG)
// against the least possible height of a tree of that many peers (⌈log₂(N+1)⌉ for fan-out
// 2); orphans (a peer that needs a parent and has none while its task has a provider);
// cycles; children per parent against the fan-out or child limit, and their distribution
// (load balance); and the fraction of fetching peers with a seed among their parents.
// Timings: the duration of every decision in the core (scheduler.WithDecisionObserver) and
// of every GetCandidateParents call during the run; then, at the end, a probe at full
// population: Config.ProbeCalls GetCandidateParents calls from Config.ProbeWorkers
// goroutines on the peers still fetching, giving decisions per second and latency
// percentiles. The probe comes after the last quality sample, so its concurrency does not
// make the quality figures depend on goroutine scheduling.
//
// # What it leaves out
//
// Bandwidth is counted in whole blocks per tick, not simulated as flows; a host's download
// capacity is not shared between its tasks; there are no corrupt blocks, partitions, or
// scheduler restarts. The data plane is a model: what the simulation checks is the
// scheduler's graph and its decisions under a realistic stream of calls.
package sim

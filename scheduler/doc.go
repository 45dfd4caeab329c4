// Package scheduler is the control plane of the P2P image distribution: it knows the hosts,
// the tasks (layer streams) and the peers taking part in them, and decides from whom each peer
// fetches. Its API is schedulerv1.Scheduler (proto/scheduler/v1, whose comments define the
// terms host, task, block, peer, parent and seed); Scheduler implements it in-process, and
// package server serves it over gRPC. A node daemon with no scheduler configured runs one
// embedded (server.NewEmbedded).
//
// # Decisions
//
// A peer's parents come from its task's topology, chosen per task by configuration:
//
//   - DAG (default): up to K parents per peer, chosen by the evaluator among a random sample
//     of the task's peers that pass the filter (package selection): not the peer itself, not
//     one of its descendants (no cycle), serving (holds blocks, reads the source, or has
//     parents itself: a peer still receiving a task is a valid parent, its block server waits
//     for blocks in flight), not bad (corrupt, failing, slow), with free upload slots.
//     One of them is the peer's primary parent, which it asks first and waits for: its
//     primary while that passes the filter (slow or not), else the newest peer that is no
//     one's primary (a chain's tail), not deeper than maxChainDepth. Peers that join together
//     so form a pipelined chain from the source, which carries the task over every uplink
//     about once; the other parents stand by (chain.go).
//   - Tree: a FaaSNet balanced tree (package topology) with its root reading the source;
//     a peer's candidate is its tree parent, or the evaluator's best outside its subtree when
//     the tree parent is bad or excluded.
//
// A decision samples at most SampleSize candidates that pass the filter (15, as Dragonfly),
// so its cost does not grow with the task; a DAG decision also walks the peer's descendants
// once, to rule them out.
//
// # Sources
//
// Every task needs a provider, a peer that needs no parent: a seed peer, a peer reading the
// registry itself (back to source), or a peer that holds the whole task. When a task with a
// known TaskSource has none, the scheduler
//
//  1. lets a registering seed host read it itself;
//  2. else asks a seed host, chosen by rendezvous hash of the task id over the seed hosts
//     with an open WatchHost stream (package rendezvous), less those that failed the task: it
//     makes that host a peer of the task, sends it a SeedTask, and returns the seed peer as
//     the registering peer's parent at once (pipelining: children fetch while it reads);
//  3. else sends one peer back to the source (DIRECTIVE_BACK_TO_SOURCE), at most
//     MaxBackToSource at a time per task; other peers get it as their parent.
//
// A provider that fails or leaves is replaced the same way, and peers that got no parent
// (starving) get one on their progress stream as soon as one exists.
//
// # Failure
//
// A host silent for more than Misses keepalive intervals is removed with its peers; a peer
// that leaves, gives up, or whose host goes is taken out of its topology and each of its
// children is given new parents at once, on its SyncProgress stream. Reports from children
// mark parents corrupt (digest mismatch, for good), failing (MaxFailures failed requests in a
// row, until a success) or slow (block time above mean + 3σ of its history, for
// selection.SlowFor or until a normal one; never a source, and in a tree a slow parent keeps
// its children); their children are reparented when that happens.
//
// # Concurrency
//
// See Scheduler: one mutex over all state, never held across I/O; commands to streams go
// through non-blocking mailboxes; one owned goroutine (the sweeper) on an injected clock
// (package clock), or none with WithManualSweep, whose caller calls Sweep.
//
// # Observability
//
// Stats returns the state's sizes and counts of events (decisions, seed triggers, peers
// sent back to the source, reparented, hosts expired); WithDecisionObserver reports the
// duration of every decision. Package metrics exports both to Prometheus; package sim uses
// them to measure a simulated population.
package scheduler

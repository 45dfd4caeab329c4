// Package selection decides how good a parent a peer would be for another: a filter that
// rules candidates out, and an evaluator that scores the rest. It is pure policy over plain
// values (Candidate, Host); the scheduler samples the candidates, fills them in, and keeps the
// best few.
//
// # Filter
//
// A candidate is ruled out, in this order, when it is
//
//   - the asking peer itself (ReasonSelf);
//   - excluded by the asking peer, such as a parent that just failed it (ReasonExcluded);
//   - one of the asking peer's descendants, which would make a cycle (ReasonDescendant);
//   - not serving: it holds no block, does not read the task from its source and has no
//     parent of its own, so it has nothing to pass on (ReasonNotServing). A peer that is still
//     receiving the task is serving: its block server waits for blocks in flight, so it can
//     relay them down a pipeline;
//   - corrupt: a child reported a block from it that failed verification (ReasonCorrupt);
//   - failing: its last MaxFailures or more requests failed in a row (ReasonFailing);
//   - slow: its last block time is above mean + 3σ of its history, reported less than
//     SlowFor ago (ReasonSlow, see Durations);
//   - out of upload slots by its host's last report (ReasonNoFreeSlots). A host that
//     announced no slot limit, or has not reported yet, has free slots.
//
// # Evaluator
//
// Score is a weighted sum of six terms, each in [0, 1], with Weights from the configuration:
//
//   - Bandwidth: free upload bandwidth, (capacity − rate) / capacity; ½ when the capacity is
//     unknown.
//   - Load: 1 − load, where load is the larger of the host's reported load and the share of
//     ChildLimit the scheduler has already handed it as children. The second part keeps a
//     burst of registrations, all seeing the same stale host state, from piling onto the same
//     few parents.
//   - Blocks: the fraction of the task the candidate holds (1 when complete): it can serve
//     those without waiting.
//   - IDC: 1 when both hosts name the same IDC.
//   - Location: the share of the "/"-separated elements of the two locations that match from
//     the start, over the longer of the two.
//   - HostType: 1 for a normal host, ½ for a seed. Seeds' upload was the bottleneck in the
//     measured runs (DESIGN-NOTES §5), so peers are preferred; a seed still wins while it
//     holds the most blocks.
//
// The defaults keep Dragonfly's proportions: 0.6 for how well the candidate can serve now
// (bandwidth 0.3, load 0.2, blocks held 0.1), 0.2 IDC, 0.1 location, 0.1 host type.
package selection

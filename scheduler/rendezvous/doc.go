// Package rendezvous ranks nodes for a key by highest-random-weight (rendezvous) hashing:
// every node gets a deterministic pseudo-random weight for the key and the heaviest wins.
//
// The scheduler uses it to choose the seed host of a task: the same task goes to the same seed
// on every scheduler and across restarts, a seed that joins takes over only about 1/n of the
// tasks, and a seed that leaves hands its tasks to the next in each task's own ranking, not
// all to one neighbour as on a ring without virtual nodes. Rank gives that ranking, so a
// caller that finds the first choice unusable takes the next.
//
// The weight is FNV-1a 64 of key, a zero byte and node, finished with the SplitMix64 mixer so
// that similar names spread evenly. It is stable: changing it moves tasks between seeds.
package rendezvous

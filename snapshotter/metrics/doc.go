// Package metrics is the node daemon's Prometheus metrics, in a registry of its own: the
// block cache (hits, misses, evictions, waits on fills in flight, bytes held), the bytes the
// node sent to and received from peers, the latency of each block it fetched by where it
// came from (a peer, a seed, the registry), the latency of FUSE operations, and how each
// layer containerd prepared was served (mounted lazily, or unpacked by containerd). Counts
// the components keep themselves are read at each scrape; latencies and layer outcomes are
// observed as they happen. The data plane's metrics live in the process that holds it (the
// FUSE manager) and the daemon gathers them from there.
package metrics

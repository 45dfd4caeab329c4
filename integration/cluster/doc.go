// Package cluster starts a P2P cluster on one machine for tests and benchmarks: a registry,
// schedulers, seed daemons and peer daemons, each in a host of its own (a network namespace
// of a netlab.Lab, with its own upload and download caps), the daemons and schedulers as
// separate processes built from this module.
//
// The registry is go-containerregistry's, served from this process inside the registry
// host, so its link is capped like the others and every blob byte it sends is counted. Each
// daemon runs with its data plane in process (lazy.fuse_manager = false) so that killing its
// process kills its block server; the test drives it through its control socket
// (fusemanager.Client: Warm fetches a whole layer and verifies it against its diffID).
//
// Close tears everything down, processes, namespaces, links and directories, even after a
// failed start; Sweep removes what a crashed run left.
package cluster

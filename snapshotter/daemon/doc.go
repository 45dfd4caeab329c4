// Package daemon builds the node daemon from its configuration (snapshotter.Config): the
// snapshotter, the registry mirror, the data plane (block cache, P2P node, FUSE layers, in
// this process or in a FUSE manager process), and the metrics and debug servers. It is the
// one constructor of both ways containerd uses the snapshotter: the proxy daemon
// (cmd/p2p-snapshotter), which serves the returned snapshotter on a unix socket, and the
// built-in plugin (package plugin), which hands it to containerd in containerd's process.
package daemon

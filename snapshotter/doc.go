// Package snapshotter will hold the containerd snapshotter named "p2p": ordinary snapshots on
// overlayfs with metadata in bbolt, and lazily mounted layers, each a read-only FUSE
// filesystem built from a layer.Index whose file reads become block reads from the
// blockcache. It will also hold the node's registry mirror, which learns chainID → layer from
// the manifests and configs containerd fetches through it.
//
// Nothing is implemented here yet; the design is in docs/architecture.md.
package snapshotter

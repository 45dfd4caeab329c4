// Package snapshotter is the containerd snapshotter named "p2p" and the daemon plumbing that
// serves it to containerd as a proxy plugin.
//
// Ordinary snapshots are containerd's own overlayfs snapshotter, used as a library rather than
// forked, so its behaviour, metadata format (bbolt) and fixes come with each containerd
// release. Lazily mounted layers — read-only FUSE filesystems built from a layer.Index whose
// reads become block reads — are added around it: the snapshotter asks the overlay snapshotter
// for each snapshot's directory (its upperdir label), mounts the layer there, and commits the
// snapshot, so overlay mounts of the container's rootfs use the FUSE mount as a lowerdir
// without knowing it.
//
// Config is the TOML configuration shared by the proxy daemon (cmd/p2p-snapshotter) and,
// later, a built-in containerd plugin. Serve exposes a snapshots.Snapshotter on a unix socket
// with containerd's snapshots gRPC API.
package snapshotter

// Package mirror is the node's registry mirror. containerd is pointed at it through
// hosts.toml; it forwards every request to the registry named by containerd's "ns" query
// parameter and streams the answer back unchanged, including authentication challenges, so
// containerd authenticates to the registry with its own credentials as it would without the
// mirror.
//
// On the way it learns which layer each snapshot will hold. nerdctl tells a snapshotter named
// "p2p" nothing but the chain ID of the snapshot it prepares; the mirror sees the manifest
// and the image config that containerd fetches before unpacking, computes the chain IDs from
// the config's rootfs.diff_ids, and records chain ID → (registry, repository, layer
// descriptor, diffID) in a bbolt file that survives restarts. Resolver answers the
// snapshotter's questions from that record.
//
// Layer blobs pass through unchanged today: containerd downloads a layer through the mirror
// only when the snapshotter could not mount it lazily.
package mirror

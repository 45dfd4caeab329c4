// Package fusemanager mounts lazily pulled layers and serves them over FUSE, either inside
// the daemon (Mounter) or in a separate, long-lived process that the daemon talks to over a
// unix socket (Serve, Client).
//
// A container's overlayfs keeps a reference to the FUSE filesystems below it, and a FUSE
// filesystem dies with the process serving it. If the daemon that answers containerd also
// served FUSE, restarting it — to upgrade it, or after a crash — would break every running
// container on a lazily mounted layer. So the daemon starts a FUSE manager process in its own
// session, which holds the block cache, the seeded layers and the FUSE servers, and which the
// daemon does not stop when it exits. A restarted daemon finds the manager still serving and
// asks it to Restore each lazily mounted layer, which costs nothing for a layer still mounted.
// Only a restart of the manager itself (an upgrade of it) unmounts layers under running
// containers; the daemon then mounts them again for new containers.
//
// The protocol is JSON over HTTP on a unix socket, internal to one node.
package fusemanager

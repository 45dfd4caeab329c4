// Package layerfs serves one lazily pulled layer as a read-only FUSE filesystem, built from
// its layer.Index, whose file data comes from a StreamReader: the layer's uncompressed
// stream, fetched block by block as it is read.
//
// A container's rootfs is then an overlayfs mount with such filesystems as lowerdirs, so the
// tree presents exactly what overlayfs expects of an extracted layer: the same names, types,
// modes, owners, times, link counts, xattrs and contents, whiteouts as 0/0 character devices
// and opaque directories marked by xattr. layertest.CompareTree checks a mount against the
// index; the tests run it, and mount overlayfs on top.
//
// # The tree
//
// Nodes are made on demand (go-fuse's dynamic idiom): Lookup finds a name in the index
// (Index.Lookup), Opendir lists Index.Children, and nothing else about the tree is built at
// mount time except two tables: an entry's place in the index, and link counts. An inode's
// number is its entry's place + 1, so the root, always the first entry, is 1, and numbers are
// the same on every mount of the same index. A hardlink has no inode of its own: it resolves
// (Index.Resolve) to its target, whose node go-fuse finds by inode number, so every name of a
// file is one inode, with a link count of all its names. A directory's link count is 2 plus
// its subdirectories.
//
// Attributes are the index's: permission bits with setuid, setgid and sticky, 0000 included
// (go-fuse's NullPermissions: it would show 0644 otherwise), owner, size, and the mtime, which
// is also atime and ctime. Symlinks show 0777 and the length of their target. Device numbers
// travel in FUSE's 32-bit encoding (major < 4096, minor < 2^20). Statfs reports the stream
// as 4 KiB blocks, none free, and one file per entry.
//
// # Whiteouts and opaque directories
//
// A layer tar says "hide NAME of the layers below" with an empty file ".wh.NAME", and "hide
// everything below this directory" with ".wh..wh..opq" in it; the index turns them into
// whiteout entries (named NAME) and an Opaque flag. overlayfs does not read the tar form: a
// lowerdir hides a name with a character device 0/0 of that name, and a directory's lower
// contents with the xattr trusted.overlay.opaque = "y" (user.overlay.opaque when overlayfs is
// mounted with userxattr). So a whiteout is a 0/0 character device, listed by Readdir as one,
// and an opaque directory answers both xattrs with "y" and lists them. A ".wh." name is never
// listed and never found, whatever the index holds.
//
// The layer's own xattrs are served as they are (security.capability, user.*, ACLs), except
// trusted.overlay.* and user.overlay.*: overlayfs would take them as its own metadata
// (redirects, metacopy, origin) and a layer has no business setting them.
//
// Tested on Linux 6.18: overlayfs accepts this filesystem as a lowerdir, the FUSE layer first
// in the lowerdir list (the left-most lowerdir is the upper-most layer), as root both with
// trusted xattrs (the default) and with the userxattr option. A write through the overlay
// copies a file up from the layer, content and xattrs.
//
// # Kernel caching
//
// A layer never changes, so the kernel is told to keep everything: names, misses and
// attributes for a day (WithEntryTimeout, WithAttrTimeout), file pages across opens
// (FOPEN_KEEP_CACHE), directory listings (FOPEN_CACHE_DIR), symlink targets and ACLs. Closes
// are not sent (FOPEN_NOFLUSH). The kernel drops cached data only under memory pressure or at
// unmount; nothing is ever invalidated by the server.
//
// Reads: the kernel sends read requests of up to WithMaxRead bytes (1 MiB, its maximum; the
// mount's max_read and max_pages follow) for direct I/O and up to the readahead size for
// buffered reads. The FUSE protocol can only lower the kernel's 128 KiB readahead, so Mount
// raises it through the mount's backing device in sysfs (WithReadAhead, 1 MiB: one default
// block): buffered sequential reads got 1.3 to 1.8 times faster here (BenchmarkRead).
// Replies are written from memory with writev; splice is disabled, since there is never a
// file descriptor to splice from and go-fuse would grow a pipe for nothing (and warn when
// 1 MiB and a header do not fit the 1 MiB pipe limit).
//
// # Reads and errors
//
// Open allows reading only and keeps no state; Read asks the StreamReader for the file's
// bytes at Offset+off, bounded by Size, straight into go-fuse's request buffer. The
// StreamReader's errors stop at this boundary, where they become an errno, and are logged
// there once, with the layer, mount point, path, offset and size:
//
//   - a read that fails, or a stream shorter than the index says, is EIO to the reading
//     process. Nothing is cached from a failed read: the next read of the same range asks the
//     StreamReader again, so a block that could not be fetched does not stay broken.
//   - a read whose process was interrupted (a signal, SIGKILL included) has its context
//     cancelled by go-fuse; if the StreamReader honours it, the read ends with EINTR and is
//     not logged. Readahead requests the kernel makes on its own are never interrupted. A
//     block cache behind the StreamReader keeps fetching a block that other readers wait for.
//
// Every change fails with EROFS: the mount is read-only (ro, MS_RDONLY) and Open refuses
// writing modes. Permissions are checked by the kernel (default_permissions) against the
// layer's modes and ACLs, for every user (allow_other). The mount allows setuid and devices,
// as the layer extracted on a host filesystem would; through overlayfs only the overlay
// mount's own flags count anyway.
//
// # Concurrency
//
// go-fuse serves requests on many goroutines at once, reads of one file included. Everything
// a node reads (the index and the tables) is built before the mount and never written after,
// so no request takes a lock here; go-fuse serializes the calls on one open directory. The
// StreamReader must be safe for concurrent use. Mount starts the server's goroutines and the
// Mounted it returns owns them: Unmount and Wait return once they have stopped, which happens
// when the kernel drops the filesystem, whoever unmounts it. A process that serves a mount
// may read it (the tests do) from other goroutines, but must not mmap its files nor fork
// while holding descriptors of it (see go-fuse's notes on deadlocks).
package layerfs

package layerfs

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// StreamReader reads a layer's uncompressed stream: it is how the filesystem gets file data.
//
// ReadStreamAt reads len(p) bytes of the stream starting at off. It returns fewer bytes only
// with an error, or at the end of the stream. It is called from many goroutines at once (the
// kernel issues reads in parallel, readahead included), and ctx is cancelled when the process
// that caused the read is interrupted; a reader that honours it returns ctx's error.
//
// blockcache.Cache.ReadStreamAt with a Filler satisfies it through a small adapter that binds
// the task and the Filler.
type StreamReader interface {
	ReadStreamAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Defaults of the options; see the package doc for why they are what they are.
const (
	DefaultMaxRead   = 1 << 20
	DefaultReadAhead = 1 << 20
	DefaultTimeout   = 24 * time.Hour
	// fsType is the type the mount shows in /proc/mounts: "fuse.p2p".
	fsType = "p2p"
)

// Option configures Mount and NewRoot.
type Option func(*config)

type config struct {
	maxRead      int
	readAhead    int
	logger       *log.Entry
	fsName       string
	entryTimeout time.Duration
	attrTimeout  time.Duration
	debug        bool
	userXattr    bool
	lowerDirs    []string
	observe      func(op string, took time.Duration)
}

// Operations WithOpObserver times.
const (
	OpLookup  = "lookup"
	OpRead    = "read"
	OpReaddir = "readdir"
)

// WithOpObserver calls observe with the time each lookup, read and directory listing took to
// answer (metrics of FUSE latency). A read's time includes fetching the blocks it needed.
func WithOpObserver(observe func(op string, took time.Duration)) Option {
	return func(c *config) { c.observe = observe }
}

// WithLowerDirs names the directories of the layers below this one, upper-most first (the
// lowerdirs overlayfs will stack under it). A directory this layer does not list but holds
// entries of takes the attributes of the same directory below, as containerd's unpacker
// gives a missing parent; without them it is 0755 root.
func WithLowerDirs(dirs []string) Option { return func(c *config) { c.lowerDirs = dirs } }

// WithUserXattr marks opaque directories with user.overlay.opaque instead of
// trusted.overlay.opaque, for overlayfs mounted with the userxattr option (rootless).
func WithUserXattr() Option { return func(c *config) { c.userXattr = true } }

// WithMaxRead sets the largest read request the kernel sends, in bytes (default
// DefaultMaxRead, 1 MiB, the kernel's limit). It is rounded down to whole pages and kept in
// [4 KiB, 1 MiB].
func WithMaxRead(n int) Option { return func(c *config) { c.maxRead = n } }

// WithReadAhead sets how far the kernel reads ahead of a sequential reader, in bytes
// (default DefaultReadAhead, 1 MiB; 0 keeps the kernel's default, 128 KiB). It is set after
// mounting, through /sys/class/bdi/<device>/read_ahead_kb of the mount; the FUSE protocol
// can only lower it. A failure to set it is logged, not fatal.
func WithReadAhead(n int) Option { return func(c *config) { c.readAhead = n } }

// WithLogger sets the logger that read errors and go-fuse's own warnings go to (default:
// log.G of the context given to Mount).
func WithLogger(l *log.Entry) Option { return func(c *config) { c.logger = l } }

// WithFSName sets the source shown in /proc/mounts, for example "p2p:<short diffID>"
// (default "p2p").
func WithFSName(name string) Option { return func(c *config) { c.fsName = name } }

// WithEntryTimeout sets how long the kernel may cache names, found and not found (default
// DefaultTimeout: a layer never changes).
func WithEntryTimeout(d time.Duration) Option { return func(c *config) { c.entryTimeout = d } }

// WithAttrTimeout sets how long the kernel may cache attributes (default DefaultTimeout).
func WithAttrTimeout(d time.Duration) Option { return func(c *config) { c.attrTimeout = d } }

// WithDebug makes go-fuse log every request and reply to the logger, at debug level.
func WithDebug(on bool) Option { return func(c *config) { c.debug = on } }

func newConfig(ctx context.Context, opts []Option) config {
	c := config{
		maxRead:      DefaultMaxRead,
		readAhead:    DefaultReadAhead,
		fsName:       fsType,
		entryTimeout: DefaultTimeout,
		attrTimeout:  DefaultTimeout,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = log.G(ctx)
	}
	page := os.Getpagesize()
	c.maxRead = min(max(c.maxRead, page), fuse.MAX_KERNEL_WRITE) / page * page
	return c
}

// NewRoot returns the root directory node of the layer's tree, to mount with go-fuse
// directly (fs.Mount, or fs.NewNodeFS in tests); Mount builds the same tree. The root's inode
// number is RootIno, which is also go-fuse's default for the root.
func NewRoot(x *layer.Index, r StreamReader, opts ...Option) (fs.InodeEmbedder, error) {
	c := newConfig(context.Background(), opts)
	t, err := newTree(withLowerAttributes(x, c.lowerDirs), r, c.logger, c.userXattr)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", x.DiffID, err)
	}
	t.observe = c.observe
	return t.rootNode(), nil
}

// Mounted is a layer mounted by Mount. Its methods are safe for concurrent use.
type Mounted struct {
	dir    string
	server *fuse.Server
	done   chan struct{} // closed once the server has stopped, however the mount went

	mu sync.Mutex // serializes Unmount
}

// Mount mounts the layer x read-only at dir, serving file data from r, and returns once the
// kernel serves the mount. x must be valid, as layer.Unmarshal and ingest.Build return it,
// except for its block digests, which are not used: r checks what it reads.
// ctx bounds nothing after Mount returns and is not kept; its logger is the default one. The
// mount lives until Unmount, or until someone else unmounts dir.
func Mount(ctx context.Context, dir string, x *layer.Index, r StreamReader, opts ...Option) (*Mounted, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mount layer %s at %s: %w", x.DiffID, dir, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("mount layer %s: %w", x.DiffID, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("mount layer %s at %s: not a directory", x.DiffID, dir)
	}
	c := newConfig(ctx, opts)
	logger := c.logger.WithField("mountpoint", dir)
	t, err := newTree(withLowerAttributes(x, c.lowerDirs), r, logger, c.userXattr)
	if err != nil {
		return nil, fmt.Errorf("mount layer %s at %s: %w", x.DiffID, dir, err)
	}
	t.observe = c.observe
	fsOpts := fuseOptions(&c, logger)
	server, err := fuse.NewServer(fs.NewNodeFS(t.rootNode(), fsOpts), dir, &fsOpts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount layer %s at %s: %w", x.DiffID, dir, err)
	}
	m := &Mounted{dir: dir, server: server, done: make(chan struct{})}
	go func() {
		server.Serve() // returns once the kernel ends the connection
		close(m.done)
	}()
	if err := server.WaitMount(); err != nil {
		if uerr := server.Unmount(); uerr == nil {
			<-m.done
		}
		return nil, fmt.Errorf("mount layer %s at %s: wait for the kernel: %w", x.DiffID, dir, err)
	}
	if c.readAhead > 0 {
		if err := setReadAhead(dir, c.readAhead); err != nil {
			logger.WithError(err).Warn("layerfs: kernel readahead left at its default")
		}
	}
	return m, nil
}

// fuseOptions returns the options of the mount and of go-fuse's node layer.
func fuseOptions(c *config, logger *log.Entry) *fs.Options {
	goLog := stdlog.New(logWriter{l: logger.WithField("component", "go-fuse"), debug: c.debug}, "", 0)
	negative := c.entryTimeout
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: c.fsName,
			Name:   fsType,
			// default_permissions: the kernel checks modes, owners and ACLs itself. suid and
			// dev: the layer behaves as it would extracted on the host (see the package doc).
			Options:          []string{"ro", "default_permissions", "suid", "dev"},
			DirectMountFlags: syscall.MS_RDONLY,
			AllowOther:       true,
			DirectMount:      true,
			MaxWrite:         c.maxRead,
			// Symlinks and ACLs never change: let the kernel cache and enforce them.
			EnableSymlinkCaching: true,
			EnableAcl:            true,
			// Reads return memory, never a file descriptor: splicing would only grow a pipe
			// for nothing (and warn when a 1 MiB reply does not fit the pipe size limit).
			DisableSplice: true,
			Logger:        goLog,
			Debug:         c.debug,
		},
		EntryTimeout:    &c.entryTimeout,
		AttrTimeout:     &c.attrTimeout,
		NegativeTimeout: &negative,
		// Modes are the layer's, 0 included: go-fuse would otherwise show 0000 as 0644/0755.
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: RootIno},
		Logger:          goLog,
	}
}

// setReadAhead sets the readahead of the mount at dir, through its backing device's sysfs
// entry: every FUSE mount has a backing device of its own.
func setReadAhead(dir string, n int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("set readahead: %w", &os.PathError{Op: "stat", Path: dir, Err: err})
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(max(n>>10, 4))), 0); err != nil {
		return fmt.Errorf("set readahead: %w", err)
	}
	return nil
}

// Dir returns the mount point.
func (m *Mounted) Dir() string { return m.dir }

// Unmount unmounts the layer and waits for the server to stop. While the mount is busy (an
// overlay mount uses it, a process has a file open) it fails with an error wrapping EBUSY and
// leaves the layer mounted. Once the layer is unmounted, by this or anyone else, it does
// nothing. The server stops when the kernel drops the filesystem, which a bind mount of it
// elsewhere would delay.
func (m *Mounted) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	err := unmount(m.dir)
	if errors.Is(err, unix.EPERM) {
		err = m.server.Unmount() // not root: fusermount, which mounted it too
	}
	if err != nil {
		select {
		case <-m.done: // unmounted by someone else meanwhile
			return nil
		default:
		}
		return fmt.Errorf("unmount layer at %s: %w", m.dir, err)
	}
	<-m.done
	return nil
}

// unmount unmounts dir, retrying for a little while if it is busy: the last reference to a
// file just closed, or to an overlay just unmounted, may take a moment to go.
func unmount(dir string) error {
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		err := unix.Unmount(dir, 0)
		if err == nil || !errors.Is(err, unix.EBUSY) || try == 4 {
			return err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// Wait returns once the layer is unmounted, by Unmount or anyone else, and the server has
// stopped.
func (m *Mounted) Wait() { <-m.done }

// logWriter turns go-fuse's log lines into entries of a structured logger. Without
// WithDebug, go-fuse logs only what went wrong; with it, it also traces every request.
type logWriter struct {
	l     *log.Entry
	debug bool
}

func (w logWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	if w.debug {
		w.l.Debug(msg)
	} else {
		w.l.Warn(msg)
	}
	return len(p), nil
}

package blobs

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/stream"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// Upstreams tells how to reach a registry's own server. registry.Client satisfies it.
type Upstreams interface {
	Upstream(ctx context.Context, host string) (*url.URL, *http.Client, error)
}

// Request names a blob and whom to ask for it.
type Request struct {
	// Host is the registry (as in an image reference) and Repository the repository in it.
	Host, Repository string
	Digest           digest.Digest
	// Size is the blob's length in bytes, as the registry reported it.
	Size int64
	// Header is sent with every request to the registry: the caller's Authorization.
	Header http.Header
}

// maxTables bounds the block tables kept in memory (32 bytes per block each).
const maxTables = 4096

// Server copies blobs through a block cache. It is safe for concurrent use.
type Server struct {
	cache     *blockcache.Cache
	upstreams Upstreams
	window    int

	mu     sync.Mutex
	tables map[layer.TaskID]*layer.BlockTable // blobs whose every block digest is known
}

// Option configures a Server.
type Option func(*Server)

// WithWindow sets how many blocks a copy fetches ahead (default stream.DefaultWindow).
func WithWindow(n int) Option { return func(s *Server) { s.window = n } }

// New returns a server keeping blocks in cache and reading the registries upstreams names.
func New(cache *blockcache.Cache, upstreams Upstreams, opts ...Option) *Server {
	s := &Server{cache: cache, upstreams: upstreams, window: stream.DefaultWindow, tables: make(map[layer.TaskID]*layer.BlockTable)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// CopyBlob writes the blob req names to w and returns the number of bytes written. Nothing
// is written before the first block is in hand, so a caller that sees an error with 0 bytes
// written may still answer otherwise. The error wraps layer.ErrDigestMismatch when the blob
// is not what its digest says; its last block was then withheld.
func (s *Server) CopyBlob(ctx context.Context, w io.Writer, req Request) (int64, error) {
	if err := req.Digest.Validate(); err != nil {
		return 0, fmt.Errorf("copy blob %q: %w", req.Digest, err)
	}
	if req.Size < 0 {
		return 0, fmt.Errorf("copy blob %s: negative size %d", req.Digest, req.Size)
	}
	base, client, err := s.upstreams.Upstream(ctx, req.Host)
	if err != nil {
		return 0, fmt.Errorf("copy blob %s: %w", req.Digest, err)
	}
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + req.Repository + "/blobs/" + req.Digest.String()
	task := layer.TaskIDFromDigest(req.Digest)
	f := &rangeFiller{client: client, url: &u, header: req.Header, size: req.Size, blockSize: int64(s.cache.BlockSize()), table: s.table(task, req.Size)}
	return stream.Copy(ctx, w, s.cache, stream.Task{ID: task, Size: req.Size, Digest: req.Digest}, f,
		stream.WithWindow(s.window), stream.WithVerified(func(t layer.BlockTable) { s.keepTable(task, t) }))
}

// table returns the block table of task if it is known and fits size.
func (s *Server) table(task layer.TaskID, size int64) *layer.BlockTable {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tables[task]; t != nil && t.Size == size {
		return t
	}
	return nil
}

func (s *Server) keepTable(task layer.TaskID, t layer.BlockTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tables) >= maxTables {
		for k := range s.tables { // drop one at random
			delete(s.tables, k)
			break
		}
	}
	s.tables[task] = &t
}

// rangeFiller reads a block of a blob with one Range request and verifies it when the blob's
// block table is known.
type rangeFiller struct {
	client    *http.Client
	url       *url.URL
	header    http.Header
	size      int64
	blockSize int64
	table     *layer.BlockTable
}

func (f *rangeFiller) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	off := int64(key.Index) * f.blockSize
	n := min(f.blockSize, f.size-off)
	if n <= 0 || int64(len(buf)) < n {
		return 0, fmt.Errorf("block %d of a %d-byte blob: out of range", key.Index, f.size)
	}
	rc, err := registry.ReadRange(ctx, f.client, f.url, f.header, off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, buf[:n]); err != nil {
		return 0, fmt.Errorf("block %d: %w", key.Index, err)
	}
	if f.table != nil {
		if err := f.table.Verify(key.Index, buf[:n]); err != nil {
			return 0, err
		}
	}
	return int(n), nil
}

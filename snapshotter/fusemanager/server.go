package fusemanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

type mountRequest struct {
	Dir    string        `json:"dir"`
	Source *seed.Source  `json:"source,omitempty"` // Mount
	DiffID digest.Digest `json:"diffID,omitempty"` // Restore
	// LowerDirs are the directories of the layers below, upper-most first.
	LowerDirs []string `json:"lowerDirs,omitempty"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// BlobCopier copies whole blobs through the manager's block cache. blobs.Server satisfies it.
type BlobCopier interface {
	CopyBlob(ctx context.Context, w io.Writer, req blobs.Request) (int64, error)
}

// ServeOption configures Serve.
type ServeOption func(*http.ServeMux)

// WithBlobs also serves blobs copied by b, for the daemon's registry mirror (Client.CopyBlob).
func WithBlobs(b BlobCopier) ServeOption {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /blob", func(w http.ResponseWriter, r *http.Request) {
			var req blobs.Request
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
				return
			}
			writeStream(w, r, log.Fields{"digest": req.Digest}, func(bw io.Writer) (int64, error) {
				return b.CopyBlob(r.Context(), bw, req)
			})
		})
	}
}

// Warmer fetches whole layers into the node's cache, to serve them to peers. p2p.Node
// satisfies it.
type Warmer interface {
	Warm(ctx context.Context, src seed.Source) error
}

// WithWarmer also serves POST /warm: fetch a whole layer now and answer when it is held and
// verified (Client.Warm).
func WithWarmer(wm Warmer) ServeOption {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /warm", handle(func(ctx context.Context, req mountRequest) error {
			if req.Source == nil {
				return errors.New("warm: no source")
			}
			return wm.Warm(ctx, *req.Source)
		}))
	}
}

// Prefetcher warms selected blocks of a layer into the node's cache. p2p.Node satisfies it.
type Prefetcher interface {
	Prefetch(ctx context.Context, src seed.Source, sel p2p.Selection, progress func(done, total int64)) error
}

// prefetchRequest is the body of POST /prefetch-blocks.
type prefetchRequest struct {
	Source *seed.Source `json:"source"`
	Files  []string     `json:"files,omitempty"`
	All    bool         `json:"all,omitempty"`
}

// PrefetchProgress is one line of POST /prefetch-blocks' answer: bytes warmed of the bytes
// asked for; the last line has Done set, and Error if the prefetch failed.
type PrefetchProgress struct {
	Warmed int64  `json:"warmed"`
	Total  int64  `json:"total"`
	Done   bool   `json:"done,omitempty"`
	Error  string `json:"error,omitempty"`
}

// progressInterval spaces the progress lines of a prefetch.
const progressInterval = 200 * time.Millisecond

// WithPrefetcher also serves POST /prefetch-blocks: warm the blocks of a layer a selection
// names, answering with JSON lines of progress and a last line saying how it ended
// (Client.PrefetchBlocks).
func WithPrefetcher(p Prefetcher) ServeOption {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /prefetch-blocks", func(w http.ResponseWriter, r *http.Request) {
			var req prefetchRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Source == nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("decode request: %v", err))
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			var (
				mu   sync.Mutex
				last time.Time
				enc  = json.NewEncoder(w)
			)
			send := func(pp PrefetchProgress, force bool) {
				mu.Lock()
				defer mu.Unlock()
				if !force && time.Since(last) < progressInterval {
					return
				}
				last = time.Now()
				if enc.Encode(pp) == nil {
					http.NewResponseController(w).Flush()
				}
			}
			var warmed, total atomic.Int64
			err := p.Prefetch(r.Context(), *req.Source, p2p.Selection{Files: req.Files, All: req.All}, func(done, tot int64) {
				warmed.Store(done)
				total.Store(tot)
				send(PrefetchProgress{Warmed: done, Total: tot}, false)
			})
			end := PrefetchProgress{Warmed: warmed.Load(), Total: total.Load(), Done: true}
			if err != nil {
				end.Error = err.Error()
			}
			send(end, true)
		})
	}
}

// WithMetrics also serves GET /metrics: h, the data plane's Prometheus metrics, which the
// daemon gathers into its own (Client.Metrics).
func WithMetrics(h http.Handler) ServeOption {
	return func(mux *http.ServeMux) { mux.Handle("GET /metrics", h) }
}

// Streamer writes a layer's uncompressed stream. p2p.Node satisfies it.
type Streamer interface {
	Stream(ctx context.Context, w io.Writer, src seed.Source) (int64, error)
}

// WithStreamer also serves POST /stream: the uncompressed stream of a layer, verified, as
// the response body (Client.Stream).
func WithStreamer(st Streamer) ServeOption {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /stream", func(w http.ResponseWriter, r *http.Request) {
			var req mountRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Source == nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("decode request: %v", err))
				return
			}
			writeStream(w, r, log.Fields{"diffID": req.Source.DiffID}, func(fw io.Writer) (int64, error) {
				return st.Stream(r.Context(), fw, *req.Source)
			})
		})
	}
}

// writeStream answers with what copy writes: 200 and the bytes once it writes any; an error
// status if it fails before; a broken connection if it fails after, so the client sees a
// broken response rather than a short one.
func writeStream(w http.ResponseWriter, r *http.Request, what log.Fields, copy func(io.Writer) (int64, error)) {
	fw := &firstWrite{w: w}
	n, err := copy(fw)
	switch {
	case err == nil:
	case !fw.started:
		writeError(w, http.StatusBadGateway, err)
	default:
		log.G(r.Context()).WithError(err).WithFields(what).WithField("sent", n).Warn("FUSE manager: stream failed midway")
		panic(http.ErrAbortHandler)
	}
}

// firstWrite answers 200 with the first bytes written.
type firstWrite struct {
	w       http.ResponseWriter
	started bool
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if !f.started {
		f.started = true
		f.w.Header().Set("Content-Type", "application/octet-stream")
		f.w.WriteHeader(http.StatusOK)
	}
	return f.w.Write(p)
}

// Serve serves m on ln until ctx ends.
func Serve(ctx context.Context, m *Mounter, ln net.Listener, opts ...ServeOption) error {
	mux := http.NewServeMux()
	for _, o := range opts {
		o(mux)
	}
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /mount", handle(func(ctx context.Context, req mountRequest) error {
		if req.Source == nil {
			return errors.New("mount: no source")
		}
		return m.Mount(ctx, req.Dir, *req.Source, req.LowerDirs)
	}))
	mux.HandleFunc("POST /prefetch", handle(func(ctx context.Context, req mountRequest) error {
		if req.Source == nil {
			return errors.New("prefetch: no source")
		}
		return m.Prefetch(context.WithoutCancel(ctx), *req.Source)
	}))
	mux.HandleFunc("POST /restore", handle(func(ctx context.Context, req mountRequest) error {
		return m.Restore(ctx, req.Dir, req.DiffID, req.LowerDirs)
	}))
	mux.HandleFunc("POST /unmount", handle(func(ctx context.Context, req mountRequest) error {
		return m.Unmount(ctx, req.Dir)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.G(ctx).WithField("address", ln.Addr().String()).Info("FUSE manager serving")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("FUSE manager: %w", err)
	}
	return nil
}

func handle(fn func(context.Context, mountRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req mountRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
			return
		}
		if req.Dir == "" && r.URL.Path != "/prefetch" && r.URL.Path != "/warm" {
			writeError(w, http.StatusBadRequest, errors.New("no directory"))
			return
		}
		if err := fn(r.Context(), req); err != nil {
			log.G(r.Context()).WithError(err).WithField("dir", req.Dir).Warn("FUSE manager request failed")
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorResponse{Error: err.Error()})
}

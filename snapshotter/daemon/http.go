package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/snapshotter/mirror"
)

// serveHTTP serves h on address until the returned stop is called; requests carry ctx's
// values (its logger) and are cancelled with it.
func serveHTTP(ctx context.Context, what, address string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go srv.Serve(ln)
	log.G(ctx).WithField("address", ln.Addr().String()).Infof("serving %s", what)
	return func() { srv.Close() }, nil
}

func metricsMux(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}

// debugMux serves Go's pprof profiles at /debug/pprof/, as containerd's [debug] address does.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveMirror serves the registry mirror on address until the returned stop is called.
func serveMirror(ctx context.Context, address string, m *mirror.Mirror) (stop func(), err error) {
	return serveHTTP(ctx, "registry mirror", address, m)
}

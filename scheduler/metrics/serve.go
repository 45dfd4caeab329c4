package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Path is where Serve exposes the metrics.
const Path = "/metrics"

// shutdownGrace bounds how long Serve waits for scrapes in progress when it stops.
const shutdownGrace = 5 * time.Second

// Mount is another handler Serve serves beside the metrics, at a ServeMux pattern.
type Mount struct {
	Pattern string
	Handler http.Handler
}

// Serve serves h at Path on ln, and each of also at its pattern, until ctx ends, then stops,
// letting requests in progress finish for a few seconds. It returns once its server
// goroutine has ended: nil after a stop asked for by ctx, the server's error otherwise. It
// closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, also ...Mount) error {
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	for _, m := range also {
		mux.Handle(m.Pattern, m.Handler)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

package server

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Embedded is a scheduler running inside a node daemon that has no scheduler configured
// (DESIGN-NOTES §1). It serves the real gRPC service over an in-memory connection, so the
// daemon talks to it through the same schedulerv1.SchedulerClient as to a remote one, and
// exposes the core for callers that want it directly.
type Embedded struct {
	// Core is the scheduler itself; its methods may be called directly.
	Core *scheduler.Scheduler

	srv    *Server
	grpc   *grpc.Server
	ln     *bufconn.Listener
	conn   *grpc.ClientConn
	served chan error
	once   sync.Once
}

// embeddedBuffer is the in-memory connection's buffer per direction.
const embeddedBuffer = 1 << 20

// NewEmbedded starts a scheduler core with opts and serves it in-process. Close it when done.
func NewEmbedded(opts ...scheduler.Option) (*Embedded, error) {
	core, err := scheduler.New(opts...)
	if err != nil {
		return nil, err
	}
	e := &Embedded{Core: core, srv: New(core), grpc: grpc.NewServer(), ln: bufconn.Listen(embeddedBuffer), served: make(chan error, 1)}
	e.srv.Register(e.grpc)
	go func() { e.served <- e.grpc.Serve(e.ln) }()
	e.conn, err = grpc.NewClient("passthrough:///embedded-scheduler",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return e.ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("connect to the embedded scheduler: %w", err)
	}
	return e, nil
}

// Client returns a client of the embedded scheduler, valid until Close.
func (e *Embedded) Client() schedulerv1.SchedulerClient {
	return schedulerv1.NewSchedulerClient(e.conn)
}

// Health returns a health client of the embedded scheduler, valid until Close.
func (e *Embedded) Health() healthpb.HealthClient { return healthpb.NewHealthClient(e.conn) }

// Close stops the scheduler: streams end with UNAVAILABLE, then the server and the core stop
// and every goroutine they started has ended when it returns.
func (e *Embedded) Close() error {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.Core.Close() // streams end, so the graceful stop does not wait for them
		e.grpc.GracefulStop()
		if e.conn != nil {
			e.conn.Close()
		}
		<-e.served
		e.srv.Wait()
	})
	return nil
}

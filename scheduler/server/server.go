package server

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Server implements schedulerv1.SchedulerServer over a scheduler core.
type Server struct {
	schedulerv1.UnimplementedSchedulerServer
	core   *scheduler.Scheduler
	health *health.Server
	recv   sync.WaitGroup // receive goroutines of SyncProgress streams
}

// New returns a server of core; Register it on a grpc.Server.
func New(core *scheduler.Scheduler) *Server {
	return &Server{core: core, health: health.NewServer()}
}

// Register registers the scheduler and health services on g, both SERVING.
func (s *Server) Register(g *grpc.Server) {
	schedulerv1.RegisterSchedulerServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(schedulerv1.Scheduler_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Shutdown reports NOT_SERVING on the health service, so clients move away before the
// server stops.
func (s *Server) Shutdown() { s.health.Shutdown() }

// Wait waits for the goroutines of the server's streams, which end with their streams. Call
// it after the grpc.Server stopped.
func (s *Server) Wait() { s.recv.Wait() }

// Serve serves core on ln until ctx ends, then reports NOT_SERVING, closes core (ending
// every stream with UNAVAILABLE, so that peers move to another scheduler of the ring), and
// stops gracefully, cutting calls still running after grace. It returns once everything it
// started has ended; the error is nil after a stop asked for by ctx.
func Serve(ctx context.Context, ln net.Listener, core *scheduler.Scheduler, grace time.Duration, opts ...grpc.ServerOption) error {
	return serve(ctx, ln, core, nil, grace, opts)
}

// ServeIssuing is Serve with certs's Certificates service beside the scheduler's: the
// scheduler issues the cluster's certificates (package issuer).
func ServeIssuing(ctx context.Context, ln net.Listener, core *scheduler.Scheduler, certs schedulerv1.CertificatesServer, grace time.Duration, opts ...grpc.ServerOption) error {
	return serve(ctx, ln, core, certs, grace, opts)
}

func serve(ctx context.Context, ln net.Listener, core *scheduler.Scheduler, certs schedulerv1.CertificatesServer, grace time.Duration, opts []grpc.ServerOption) error {
	g := grpc.NewServer(opts...)
	s := New(core)
	s.Register(g)
	if certs != nil {
		schedulerv1.RegisterCertificatesServer(g, certs)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	var err error
	select {
	case err = <-served:
		g.Stop()
		core.Close()
	case <-ctx.Done():
		log.G(ctx).Info("stopping the scheduler")
		s.Shutdown()
		core.Close()
		stopped := make(chan struct{})
		go func() {
			g.GracefulStop()
			close(stopped)
		}()
		timer := time.NewTimer(grace)
		select {
		case <-stopped:
		case <-timer.C:
			g.Stop()
			<-stopped
		}
		timer.Stop()
		<-served
	}
	s.Wait()
	return err
}

// AnnounceHost implements the RPC.
func (s *Server) AnnounceHost(ctx context.Context, req *schedulerv1.AnnounceHostRequest) (*schedulerv1.AnnounceHostResponse, error) {
	resp, err := s.core.AnnounceHost(ctx, req)
	return resp, toStatus(err)
}

// Keepalive implements the RPC.
func (s *Server) Keepalive(ctx context.Context, req *schedulerv1.KeepaliveRequest) (*schedulerv1.KeepaliveResponse, error) {
	resp, err := s.core.Keepalive(ctx, req)
	return resp, toStatus(err)
}

// RegisterPeer implements the RPC.
func (s *Server) RegisterPeer(ctx context.Context, req *schedulerv1.RegisterPeerRequest) (*schedulerv1.RegisterPeerResponse, error) {
	resp, err := s.core.RegisterPeer(ctx, req)
	return resp, toStatus(err)
}

// GetCandidateParents implements the RPC.
func (s *Server) GetCandidateParents(ctx context.Context, req *schedulerv1.GetCandidateParentsRequest) (*schedulerv1.GetCandidateParentsResponse, error) {
	resp, err := s.core.GetCandidateParents(ctx, req)
	return resp, toStatus(err)
}

// LeaveTask implements the RPC.
func (s *Server) LeaveTask(ctx context.Context, req *schedulerv1.LeaveTaskRequest) (*schedulerv1.LeaveTaskResponse, error) {
	resp, err := s.core.LeaveTask(ctx, req)
	return resp, toStatus(err)
}

// PrefetchTask implements the RPC.
func (s *Server) PrefetchTask(ctx context.Context, req *schedulerv1.PrefetchTaskRequest) (*schedulerv1.PrefetchTaskResponse, error) {
	resp, err := s.core.PrefetchTask(ctx, req)
	return resp, toStatus(err)
}

// ReportPrefetch implements the RPC.
func (s *Server) ReportPrefetch(ctx context.Context, req *schedulerv1.ReportPrefetchRequest) (*schedulerv1.ReportPrefetchResponse, error) {
	resp, err := s.core.ReportPrefetch(ctx, req)
	return resp, toStatus(err)
}

// GetPrefetch implements the RPC.
func (s *Server) GetPrefetch(ctx context.Context, req *schedulerv1.GetPrefetchRequest) (*schedulerv1.GetPrefetchResponse, error) {
	resp, err := s.core.GetPrefetch(ctx, req)
	return resp, toStatus(err)
}

// CheckAccess implements the RPC.
func (s *Server) CheckAccess(ctx context.Context, req *schedulerv1.CheckAccessRequest) (*schedulerv1.CheckAccessResponse, error) {
	resp, err := s.core.CheckAccess(ctx, req)
	return resp, toStatus(err)
}

// LeaveHost implements the RPC.
func (s *Server) LeaveHost(ctx context.Context, req *schedulerv1.LeaveHostRequest) (*schedulerv1.LeaveHostResponse, error) {
	resp, err := s.core.LeaveHost(ctx, req)
	return resp, toStatus(err)
}

// SyncProgress implements the RPC (see the package documentation).
func (s *Server) SyncProgress(stream grpc.BidiStreamingServer[schedulerv1.ProgressReport, schedulerv1.SchedulerCommand]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return toStatus(err)
	}
	pr, err := s.core.OpenProgress(ctx, first)
	if err != nil {
		return toStatus(err)
	}
	defer pr.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// received gets the receive goroutine's end: nil when the peer closed its side. It is
	// buffered, so the goroutine never waits on the handler, which may have returned.
	received := make(chan error, 1)
	s.recv.Add(1)
	go func() {
		defer s.recv.Done()
		received <- receive(ctx, stream, pr)
		cancel()
	}()
	for {
		cmd, err := pr.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// The receive side ended, or the RPC did (then Recv returns at once).
				return toStatus(<-received)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return toStatus(err)
		}
		if err := stream.Send(cmd); err != nil {
			return toStatus(err)
		}
	}
}

// receive applies the peer's reports until it closes its side (nil) or something fails.
func receive(ctx context.Context, stream grpc.BidiStreamingServer[schedulerv1.ProgressReport, schedulerv1.SchedulerCommand], pr *scheduler.Progress) error {
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := pr.Report(ctx, r); err != nil {
			return err
		}
	}
}

// WatchHost implements the RPC.
func (s *Server) WatchHost(req *schedulerv1.WatchHostRequest, stream grpc.ServerStreamingServer[schedulerv1.HostCommand]) error {
	ctx := stream.Context()
	w, err := s.core.WatchHost(ctx, req)
	if err != nil {
		return toStatus(err)
	}
	defer w.Close()
	for {
		cmd, err := w.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
		if err := stream.Send(cmd); err != nil {
			return toStatus(err)
		}
	}
}

// toStatus turns a core error into a gRPC status error, the one place this happens. Status
// errors (from the transport) pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errdefs.IsNotFound(err):
		code = codes.NotFound
	case errdefs.IsInvalidArgument(err):
		code = codes.InvalidArgument
	case errdefs.IsFailedPrecondition(err):
		code = codes.FailedPrecondition
	case errdefs.IsUnavailable(err):
		code = codes.Unavailable
	case errdefs.IsPermissionDenied(err):
		code = codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}

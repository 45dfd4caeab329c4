package server

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
)

func TestMain(m *testing.M) {
	_ = log.SetLevel("error")
	os.Exit(m.Run())
}

// wait bounds every wait for something the server sends; nothing here sleeps for timing.
const wait = 10 * time.Second

const task = "sha256:00000000000000000000000000000000000000000000000000000000000000aa"

var source = &schedulerv1.TaskSource{Registry: "registry.test", Repository: "library/app", BlobDigest: task, DiffId: task}

// cluster is a scheduler served on 127.0.0.1:0 on a fake clock, and a client of it.
type cluster struct {
	t      *testing.T
	clk    *clock.Fake
	core   *scheduler.Scheduler
	client schedulerv1.SchedulerClient
	conn   *grpc.ClientConn
	ctx    context.Context
}

func startCluster(t *testing.T, opts ...scheduler.Option) *cluster {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	core, err := scheduler.New(append([]scheduler.Option{scheduler.WithClock(clk), scheduler.WithRandSeed(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, core, 5*time.Second) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &cluster{t: t, clk: clk, core: core, client: schedulerv1.NewSchedulerClient(conn), conn: conn, ctx: ctx}
}

func (c *cluster) announce(id string, typ schedulerv1.HostType) {
	c.t.Helper()
	resp, err := c.client.AnnounceHost(c.ctx, &schedulerv1.AnnounceHostRequest{HostId: id, BlockAddress: id + ":65002", Type: typ, UploadCapacity: 20 << 20})
	if err != nil {
		c.t.Fatalf("announce %s: %v", id, err)
	}
	if resp.KeepaliveIntervalMs != 5000 {
		c.t.Fatalf("got keepalive interval %d ms; want 5000", resp.KeepaliveIntervalMs)
	}
}

func (c *cluster) keepalive(id string) {
	c.t.Helper()
	if _, err := c.client.Keepalive(c.ctx, &schedulerv1.KeepaliveRequest{HostId: id, State: &schedulerv1.HostState{FreeUploadSlots: 4}}); err != nil {
		c.t.Fatalf("keepalive %s: %v", id, err)
	}
}

// member is one host's peer on the task with its progress stream.
type member struct {
	host string
	resp *schedulerv1.RegisterPeerResponse
	cmds chan *schedulerv1.SchedulerCommand
	end  chan error
}

func (c *cluster) join(host string) *member {
	c.t.Helper()
	resp, err := c.client.RegisterPeer(c.ctx, &schedulerv1.RegisterPeerRequest{
		HostId: host, TaskId: task, TaskSize: 64 << 20, BlockSize: 1 << 20, BlockCount: 64, Source: source,
	})
	if err != nil {
		c.t.Fatalf("register %s: %v", host, err)
	}
	m := &member{host: host, resp: resp, cmds: make(chan *schedulerv1.SchedulerCommand, 16), end: make(chan error, 1)}
	stream, err := c.client.SyncProgress(c.ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := stream.Send(&schedulerv1.ProgressReport{PeerId: resp.PeerId, TaskId: task, Report: &schedulerv1.ProgressReport_HeldBitmap{}}); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		for {
			cmd, err := stream.Recv()
			if err != nil {
				m.end <- err
				return
			}
			m.cmds <- cmd
		}
	}()
	return m
}

func TestHealth(t *testing.T) {
	c := startCluster(t)
	h := healthpb.NewHealthClient(c.conn)
	for _, svc := range []string{"", schedulerv1.Scheduler_ServiceDesc.ServiceName} {
		resp, err := h.Check(c.ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q: got %v, %v; want SERVING", svc, resp, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	c := startCluster(t)
	c.announce("h", schedulerv1.HostType_HOST_TYPE_NORMAL)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unknown host", func() error {
			_, err := c.client.Keepalive(c.ctx, &schedulerv1.KeepaliveRequest{HostId: "nobody"})
			return err
		}, codes.NotFound},
		{"unknown peer", func() error {
			_, err := c.client.GetCandidateParents(c.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: "nobody", TaskId: task})
			return err
		}, codes.NotFound},
		{"bad task id", func() error {
			_, err := c.client.RegisterPeer(c.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: "sha256:xyz", BlockSize: 1})
			return err
		}, codes.InvalidArgument},
		{"block size mismatch", func() error {
			if _, err := c.client.RegisterPeer(c.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: task, BlockSize: 1 << 20}); err != nil {
				return err
			}
			_, err := c.client.RegisterPeer(c.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: task, BlockSize: 4096})
			return err
		}, codes.FailedPrecondition},
		{"progress of an unknown peer", func() error {
			stream, err := c.client.SyncProgress(c.ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&schedulerv1.ProgressReport{PeerId: "nobody", TaskId: task}); err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.NotFound},
		{"watch of an unknown host", func() error {
			stream, err := c.client.WatchHost(c.ctx, &schedulerv1.WatchHostRequest{HostId: "nobody"})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// TestDistribution: one seed host watching its stream and 8 normal hosts, each registering
// on one task with its source, over real gRPC. The seed gets exactly one SeedTask, every peer
// gets candidates, the shape is a tree or a DAG as configured, and a host that stops sending
// keepalives (on the fake clock) is removed and its children get new parents on their
// progress streams.
func TestDistribution(t *testing.T) {
	for _, mode := range []scheduler.Mode{scheduler.ModeTree, scheduler.ModeDAG} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t, scheduler.WithTopology(mode, 2))
			c.announce("seed", schedulerv1.HostType_HOST_TYPE_SEED)
			watch, err := c.client.WatchHost(c.ctx, &schedulerv1.WatchHostRequest{HostId: "seed"})
			if err != nil {
				t.Fatal(err)
			}
			seedTasks := make(chan *schedulerv1.SeedTask, 8)
			go func() {
				for {
					cmd, err := watch.Recv()
					if err != nil {
						close(seedTasks)
						return
					}
					seedTasks <- cmd.GetSeedTask()
				}
			}()
			// The watch is open once the scheduler counts a seed.
			for c.core.Stats().Seeds != 1 {
				time.Sleep(time.Millisecond)
			}
			var hosts []string
			for i := range 8 {
				hosts = append(hosts, fmt.Sprintf("node-%d", i))
				c.announce(hosts[i], schedulerv1.HostType_HOST_TYPE_NORMAL)
			}
			members := map[string]*member{}
			for _, h := range hosts {
				members[h] = c.join(h)
			}

			// Exactly one SeedTask, for our task.
			var st *schedulerv1.SeedTask
			select {
			case st = <-seedTasks:
			case <-time.After(wait):
				t.Fatal("the seed got no SeedTask")
			}
			if st.TaskId != task || st.BlockCount != 64 || st.Source.GetRepository() != "library/app" {
				t.Fatalf("got %v; want the task with its source", st)
			}
			seedPeer := c.join("seed")
			if seedPeer.resp.PeerId != st.PeerId || seedPeer.resp.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
				t.Fatalf("seed registered as %s, %v; want %s, BACK_TO_SOURCE", seedPeer.resp.PeerId, seedPeer.resp.Directive, st.PeerId)
			}
			info, err := c.core.Inspect(task)
			if err != nil {
				t.Fatal(err)
			}
			seeds := 0
			for _, p := range info.Peers {
				if p.Seed {
					seeds++
				}
			}
			if seeds != 1 || len(info.Peers) != 9 {
				t.Fatalf("got %d seed peers of %d; want 1 of 9", seeds, len(info.Peers))
			}

			// Every peer got candidates; the shape.
			parents := map[string][]string{} // peer → candidate ids
			byPeer := map[string]*member{}
			for _, m := range members {
				if m.resp.Directive != schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS || len(m.resp.Candidates) == 0 {
					t.Fatalf("%s got %v with %d candidates; want FETCH_FROM_PARENTS with some", m.host, m.resp.Directive, len(m.resp.Candidates))
				}
				for _, cp := range m.resp.Candidates {
					parents[m.resp.PeerId] = append(parents[m.resp.PeerId], cp.PeerId)
				}
				byPeer[m.resp.PeerId] = m
			}
			byPeer[st.PeerId] = seedPeer
			switch mode {
			case scheduler.ModeTree:
				checkTree(t, parents, st.PeerId)
			case scheduler.ModeDAG:
				checkAcyclic(t, parents)
			}

			// Kill a host that is somebody's parent: it stops sending keepalives.
			var victim string
			for _, m := range members {
				for _, ps := range parents {
					if slices.Contains(ps, m.resp.PeerId) && (victim == "" || m.host < victim) {
						victim = m.host
					}
				}
			}
			if victim == "" {
				t.Fatal("no normal peer is a parent")
			}
			dead := members[victim].resp.PeerId
			var children []*member
			for id, ps := range parents {
				if slices.Contains(ps, dead) {
					children = append(children, byPeer[id])
				}
			}
			for range 4 { // 20 s on the fake clock: more than 3 missed 5 s keepalives
				c.clk.Advance(5 * time.Second)
				for _, h := range append(hosts, "seed") {
					if h != victim {
						c.keepalive(h)
					}
				}
			}
			for _, ch := range children {
				got := awaitParents(t, ch)
				if len(got) == 0 || slices.Contains(got, dead) {
					t.Fatalf("%s got new parents %v; want some, not the dead %s", ch.host, got, dead)
				}
			}
			select {
			case err := <-members[victim].end:
				if status.Code(err) != codes.NotFound {
					t.Fatalf("dead host's stream ended with %v; want NotFound", err)
				}
			case <-time.After(wait):
				t.Fatal("dead host's stream did not end")
			}
			if _, err := c.client.Keepalive(c.ctx, &schedulerv1.KeepaliveRequest{HostId: victim}); status.Code(err) != codes.NotFound {
				t.Fatalf("dead host's keepalive: got %v; want NotFound", err)
			}
			if mode == scheduler.ModeTree {
				info, _ := c.core.Inspect(task)
				tree := map[string][]string{}
				for _, p := range info.Peers {
					tree[p.ID] = p.Parents
				}
				checkTree(t, tree, st.PeerId)
			}
			// No second SeedTask came meanwhile.
			select {
			case st2, ok := <-seedTasks:
				if ok {
					t.Fatalf("the seed got a second SeedTask %v; want exactly one", st2)
				}
			default:
			}
		})
	}
}

// awaitParents returns the candidates of the next NewParents m receives.
func awaitParents(t *testing.T, m *member) []string {
	t.Helper()
	for {
		select {
		case cmd := <-m.cmds:
			if np := cmd.GetNewParents(); np != nil {
				var ids []string
				for _, cp := range np.Candidates {
					ids = append(ids, cp.PeerId)
				}
				return ids
			}
		case err := <-m.end:
			t.Fatalf("%s's stream ended: %v", m.host, err)
		case <-time.After(wait):
			t.Fatalf("%s got no new parents", m.host)
		}
	}
}

// checkTree checks that parents (peer → its one tree parent; the root has none) is a tree
// rooted at root with fan-out 2 and height ≤ ⌈log₂(N+1)⌉.
func checkTree(t *testing.T, parents map[string][]string, root string) {
	t.Helper()
	children := map[string]int{}
	nodes := map[string]bool{root: true}
	for id, ps := range parents {
		nodes[id] = true
		if id == root {
			if len(ps) != 0 {
				t.Fatalf("root %s has parents %v", root, ps)
			}
			continue
		}
		if len(ps) != 1 {
			t.Fatalf("peer %s has candidates %v; want its one tree parent", id, ps)
		}
		children[ps[0]]++
	}
	height := 0
	for id := range nodes {
		d := 1
		for x := id; x != root; x = parents[x][0] {
			d++
			if d > len(nodes) {
				t.Fatalf("peer %s does not reach the root", id)
			}
		}
		height = max(height, d)
	}
	for id, n := range children {
		if n > 2 {
			t.Fatalf("peer %s has %d children; want at most 2", id, n)
		}
	}
	if bound := int(math.Ceil(math.Log2(float64(len(nodes) + 1)))); height > bound {
		t.Fatalf("height %d with %d peers; want at most %d", height, len(nodes), bound)
	}
}

func checkAcyclic(t *testing.T, parents map[string][]string) {
	t.Helper()
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string)
	visit = func(x string) {
		switch state[x] {
		case 1:
			t.Fatalf("cycle through %s", x)
		case 2:
			return
		}
		state[x] = 1
		for _, p := range parents[x] {
			visit(p)
		}
		state[x] = 2
	}
	for x := range parents {
		visit(x)
	}
}

func TestEmbedded(t *testing.T) {
	e, err := NewEmbedded(scheduler.WithMaxBackToSource(1))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	resp, err := e.Health().Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: got %v, %v; want SERVING", resp, err)
	}
	cl := e.Client()
	for _, h := range []string{"a", "b"} {
		if _, err := cl.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{HostId: h, BlockAddress: h + ":1"}); err != nil {
			t.Fatal(err)
		}
	}
	ra, err := cl.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: "a", TaskId: task, BlockSize: 1 << 20, Source: source})
	if err != nil || ra.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		t.Fatalf("first peer: got %v, %v; want BACK_TO_SOURCE (no seed)", ra, err)
	}
	rb, err := cl.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: "b", TaskId: task, BlockSize: 1 << 20, Source: source})
	if err != nil || len(rb.Candidates) != 1 || rb.Candidates[0].PeerId != ra.PeerId {
		t.Fatalf("second peer: got %v, %v; want the first as parent", rb, err)
	}
	// An open stream ends with UNAVAILABLE on Close, and Close returns.
	stream, err := cl.SyncProgress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&schedulerv1.ProgressReport{PeerId: rb.PeerId, TaskId: task, Report: &schedulerv1.ProgressReport_HeldBitmap{}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		done <- err
	}()
	e.Close()
	select {
	case err := <-done:
		if c := status.Code(err); c != codes.Unavailable {
			t.Fatalf("stream ended with %v; want Unavailable", err)
		}
	case <-time.After(wait):
		t.Fatal("stream did not end on Close")
	}
}

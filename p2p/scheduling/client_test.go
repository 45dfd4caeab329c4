package scheduling

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/server"
)

// schedulerProc is a real scheduler served over TCP on loopback.
type schedulerProc struct {
	addr string
	core *scheduler.Scheduler
	stop context.CancelFunc
	done chan error
	once sync.Once
}

func startScheduler(t *testing.T, addr string) *schedulerProc {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	core, err := scheduler.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &schedulerProc{addr: ln.Addr().String(), core: core, stop: cancel, done: make(chan error, 1)}
	go func() { sp.done <- server.Serve(ctx, ln, core, 0) }()
	t.Cleanup(sp.kill)
	return sp
}

func (sp *schedulerProc) kill() {
	sp.once.Do(func() {
		sp.stop()
		<-sp.done
		sp.core.Close()
	})
}

func source(i int) seed.Source {
	d := digest.FromString("layer " + string(rune('a'+i)))
	return seed.Source{Host: "registry.test", Repository: "app", DiffID: d,
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("blob"), Size: 100}}
}

func newClient(t *testing.T, id string, addrs []string, seedHost bool, onSeed func(context.Context, seed.Source)) *Client {
	t.Helper()
	ring, err := NewRing(t.Context(), addrs, time.Minute, net.DefaultResolver, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var opts []Option
	if onSeed != nil {
		opts = append(opts, WithSeedHandler(onSeed))
	}
	c := New(Host{ID: id, BlockAddress: "127.0.0.1:1" + id, Seed: seedHost, UploadSlots: 4}, func() *schedulerv1.HostState { return &schedulerv1.HostState{FreeUploadSlots: 4} }, ring, opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRegisterSeedAndParents(t *testing.T) {
	sp := startScheduler(t, "")
	seeded := make(chan seed.Source, 1)
	newClient(t, "seed", []string{sp.addr}, true, func(_ context.Context, src seed.Source) { seeded <- src })
	time.Sleep(100 * time.Millisecond) // the seed's watch is open
	peer := newClient(t, "peer", []string{sp.addr}, false, nil)
	src := source(0)
	reg, err := peer.Register(t.Context(), src, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Directive != p2p.FetchFromParents || len(reg.Parents) != 1 || reg.Parents[0].Addr != "127.0.0.1:1seed" {
		t.Fatalf("got %+v; want the seed as the one parent", reg)
	}
	select {
	case got := <-seeded:
		if got.DiffID != src.DiffID || got.Repository != "app" {
			t.Fatalf("seed asked to seed %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the seed was never asked to read the layer")
	}
	ps, err := peer.Parents(t.Context(), layer.TaskIDFromDigest(src.DiffID), nil)
	if err != nil || len(ps) == 0 {
		t.Fatalf("parents: %v, %v", ps, err)
	}
}

func TestFailoverToTheNextScheduler(t *testing.T) {
	a, b := startScheduler(t, ""), startScheduler(t, "")
	c := newClient(t, "peer", []string{a.addr, b.addr}, false, nil)
	// Register on the task's owner on the ring, then kill the owner.
	src := source(0)
	owner, other := a, b
	if c.ring.Order(string(layer.TaskIDFromDigest(src.DiffID)))[0] == b.addr {
		owner, other = b, a
	}
	if _, err := c.Register(t.Context(), src, 1<<20); err != nil {
		t.Fatal(err)
	}
	task := string(layer.TaskIDFromDigest(src.DiffID))
	if _, err := owner.core.Inspect(task); err != nil {
		t.Fatalf("the ring's owner does not know the task: %v", err)
	}
	owner.kill()
	start := time.Now()
	reg, err := c.Register(t.Context(), src, 1<<20)
	if err != nil {
		t.Fatalf("register after the owner died: %v", err)
	}
	t.Logf("failed over in %s; directive %v", time.Since(start), reg.Directive)
	if _, err := other.core.Inspect(task); err != nil {
		t.Fatalf("the next scheduler on the ring did not take the task: %v", err)
	}
	if got := c.ring.Order(task); len(got) != 1 || got[0] != other.addr {
		t.Fatalf("ring order after the failure: %v; want only %s during the cooldown", got, other.addr)
	}
}

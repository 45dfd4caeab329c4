package cluster

import (
	"bytes"
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// TestCorruptPeerIsCaught: a peer that holds the layer but flips a byte of every block it
// serves joins the cluster and tells the scheduler it holds the whole layer, with more
// upload capacity than anyone, so peers pick it. Every peer still completes with the exact
// layer (checked against its diffID), having refused each corrupt block.
func TestCorruptPeerIsCaught(t *testing.T) {
	c, src, files := startClusterWithFiles(t, Options{
		Name: "p2pdc", Subnet: netip.MustParsePrefix("10.213.10.0/24"), Peers: 4, Seeds: 1,
		Limits: netlab.Limits{Up: 200 * netlab.Mbit, Down: 200 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 200 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
	}, 24<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The corrupt peer, played by this process inside a host of its own.
	raw, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ingest.Build(ctx, bytes.NewReader(raw), ingest.Options{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if x.DiffID != src.DiffID {
		t.Fatalf("the test's tar has diffID %s, the pushed layer %s", x.DiffID, src.DiffID)
	}
	h, err := c.Lab.AddHost(ctx, "corrupt", netlab.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(h.Addr, blockPort).String()
	ln, err := h.Listen(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := blockcache.New(8<<20, blockcache.WithBlockSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	bad := &corruptHolder{raw: raw, index: x, cache: cache}
	srv := peer.NewServer(bad)
	go srv.Serve(context.Background(), ln)
	defer srv.Close()

	conn, err := grpc.NewClient(c.Schedulers[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sched := schedulerv1.NewSchedulerClient(conn)
	if _, err := sched.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{HostId: "corrupt", BlockAddress: addr, Type: schedulerv1.HostType_HOST_TYPE_NORMAL,
		UploadCapacity: 10 << 30, DownloadCapacity: 10 << 30, UploadSlots: 64}); err != nil {
		t.Fatal(err)
	}
	reg, err := sched.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: "corrupt", TaskId: string(x.Task()), TaskSize: uint64(x.Blocks.Size),
		BlockSize: 1 << 20, BlockCount: uint32(x.Blocks.Count())})
	if err != nil {
		t.Fatal(err)
	}
	progress, err := sched.SyncProgress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := schedulerv1.NewBitmap(x.Blocks.Count())
	for i := range x.Blocks.Count() {
		held.Set(i)
	}
	for _, r := range []*schedulerv1.ProgressReport{
		{Report: &schedulerv1.ProgressReport_HeldBitmap{HeldBitmap: held}},
		{Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{TaskSize: uint64(x.Blocks.Size), BlockCount: uint32(x.Blocks.Count())}}},
	} {
		r.PeerId, r.TaskId = reg.GetPeerId(), string(x.Task())
		if err := progress.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	keepalive := time.NewTicker(time.Second)
	defer keepalive.Stop()
	go func() {
		for range keepalive.C {
			sched.Keepalive(context.Background(), &schedulerv1.KeepaliveRequest{HostId: "corrupt", State: &schedulerv1.HostState{FreeUploadSlots: 64}})
		}
	}()

	for i, err := range warmAll(ctx, c.Peers, src) {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	served := bad.served.Load()
	t.Logf("the corrupt peer served %d corrupt blocks; every peer refused them and completed", served)
	if served == 0 {
		t.Error("no peer asked the corrupt peer for a block: the test proved nothing")
	}
}

// corruptHolder holds a layer and serves every block with one byte flipped.
type corruptHolder struct {
	raw    []byte
	index  *layer.Index
	cache  *blockcache.Cache
	served atomic.Int64
	seq    atomic.Int64
}

func (c *corruptHolder) Block(ctx context.Context, _ layer.TaskID, i int) (*blockcache.Block, error) {
	if i >= c.index.Blocks.Count() {
		return nil, peer.ErrNotHeld
	}
	off, n := c.index.Blocks.Range(i)
	key := layer.BlockKey{Task: c.index.Task(), Index: int(c.seq.Add(1))} // a fresh copy every time
	b, err := c.cache.Get(ctx, key, blockcache.FillerFunc(func(_ context.Context, _ layer.BlockKey, buf []byte) (int, error) {
		copy(buf, c.raw[off:off+n])
		buf[n/3] ^= 0x5a
		return int(n), nil
	}))
	if err == nil {
		c.served.Add(1)
	}
	return b, err
}

func (c *corruptHolder) Table(_ context.Context, _ layer.TaskID, from int) (wire.TablePart, error) {
	d := c.index.Blocks.Digests
	return wire.TablePart{Total: len(d), Complete: true, From: from, Digests: d[min(from, len(d)):]}, nil
}

func (c *corruptHolder) Index(context.Context, layer.TaskID) ([]byte, error) {
	return c.index.Marshal()
}

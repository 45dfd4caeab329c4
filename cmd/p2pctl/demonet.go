package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/scheduling"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// pacer spaces writes so that together they go no faster than rate bytes per second: the
// upload cap of one demo host, on loopback, without root or tc.
type pacer struct {
	rate float64
	mu   sync.Mutex
	next time.Time // when the link is free again
}

// wait blocks until n more bytes may go.
func (p *pacer) wait(n int) {
	p.mu.Lock()
	now := time.Now()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	p.mu.Unlock()
	time.Sleep(time.Until(start))
}

// pacedListener accepts connections whose writes share one pacer.
type pacedListener struct {
	net.Listener
	p *pacer
}

func (l pacedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return pacedConn{Conn: c, p: l.p}, nil
}

type pacedConn struct {
	net.Conn
	p *pacer
}

// pacedChunk is the unit writes are paced in: small enough that concurrent connections
// interleave, as packets of one link do.
const pacedChunk = 16 << 10

func (c pacedConn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n := min(len(b)-written, pacedChunk)
		c.p.wait(n)
		m, err := c.Conn.Write(b[written : written+n])
		written += m
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// listenPaced listens on a free loopback port, its uploads capped at rate bytes per second.
func listenPaced(rate float64) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return pacedListener{Listener: ln, p: &pacer{rate: rate}}, nil
}

// demoNode is one host of the demo cluster: a node daemon's data plane, in this process.
type demoNode struct {
	name   string
	node   *p2p.Node
	server *peer.Server
	cache  *blockcache.Cache
	close  []func() error
}

// startDemoNode starts a node named name, serving blocks at upload rate bytes per second,
// asking the scheduler at schedAddr; a seed reads layers the scheduler sends it.
func startDemoNode(ctx context.Context, name, dir, schedAddr string, regClient *registry.Client, seedHost bool, rate float64, cacheBytes int64, blockSize int) (*demoNode, error) {
	d := &demoNode{name: name}
	fail := func(err error) (*demoNode, error) {
		d.Close()
		return nil, fmt.Errorf("demo host %s: %w", name, err)
	}
	cache, err := blockcache.New(cacheBytes, blockcache.WithBlockSize(blockSize))
	if err != nil {
		return fail(err)
	}
	d.cache = cache
	d.close = append(d.close, cache.Close)
	record := tasks.New(cache)
	root := filepath.Join(dir, name)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fail(err)
	}
	seeds, err := seed.New(root, cache, regClient, seed.WithObserver(record))
	if err != nil {
		return fail(err)
	}
	d.close = append(d.close, seeds.Close)
	d.server = peer.NewServer(record)
	ln, err := listenPaced(rate)
	if err != nil {
		return fail(err)
	}
	go d.server.Serve(ctx, ln)
	d.close = append(d.close, d.server.Close)

	ring, err := scheduling.NewRing(ctx, []string{schedAddr}, 5*time.Second, net.DefaultResolver, time.Now)
	if err != nil {
		return fail(err)
	}
	host := scheduling.Host{ID: name, Hostname: name, BlockAddress: ln.Addr().String(), Seed: seedHost, UploadCapacity: uint64(rate)}
	var nodeMu sync.Mutex // the client reaches the node, made after it, through this
	state := func() *schedulerv1.HostState {
		st := d.server.State()
		hs := &schedulerv1.HostState{UploadRate: uint64(st.UploadRate), FreeUploadSlots: uint32(st.FreeSlots), Load: st.Load}
		nodeMu.Lock()
		defer nodeMu.Unlock()
		if d.node != nil {
			hs.DownloadRate = uint64(d.node.DownloadRate())
		}
		return hs
	}
	var opts []scheduling.Option
	if seedHost {
		opts = append(opts, scheduling.WithSeedHandler(func(ctx context.Context, src seed.Source) {
			nodeMu.Lock()
			n := d.node
			nodeMu.Unlock()
			if n != nil {
				_ = n.SeedLayer(ctx, src) // a failure shows as peers that never complete
			}
		}))
	}
	client := scheduling.New(host, state, ring, opts...)
	d.close = append(d.close, client.Close)
	nodeMu.Lock()
	d.node = p2p.NewNode(cache, record, seeds, client, p2p.WithBlobRanges(regClient))
	nodeMu.Unlock()
	d.close = append(d.close, d.node.Close)
	return d, nil
}

// Close stops the node, last started first.
func (d *demoNode) Close() {
	for i := len(d.close) - 1; i >= 0; i-- {
		d.close[i]()
	}
}

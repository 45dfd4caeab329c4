package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/scheduling"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/metrics"
)

// DataPlane is what holds this node's blocks, in whichever process serves FUSE: the block
// cache, the layers (seeded, or fetched from peers), the block server, and the blob server
// of the mirror. Close it when done.
type DataPlane struct {
	mounter *fusemanager.Mounter
	blobs   *blobs.Server
	node    *p2p.Node
	metrics *metrics.DataPlane
	close   func()
}

// Mounter mounts the data plane's layers.
func (d *DataPlane) Mounter() *fusemanager.Mounter { return d.mounter }

// Close stops everything the data plane runs.
func (d *DataPlane) Close() { d.close() }

// ServeOptions are what the data plane's control socket serves besides mounts.
func (d *DataPlane) ServeOptions() []fusemanager.ServeOption {
	return []fusemanager.ServeOption{fusemanager.WithBlobs(d.blobs), fusemanager.WithWarmer(d.node), fusemanager.WithStreamer(d.node),
		fusemanager.WithPrefetcher(d.node), fusemanager.WithMetrics(d.metrics.Handler())}
}

// NewDataPlane builds the data plane from cfg. With p2p.address set it serves blocks to
// peers and, with p2p.schedulers set, asks those schedulers where each layer comes from;
// otherwise every layer is read from its registry.
func NewDataPlane(ctx context.Context, cfg snapshotter.Config) (_ *DataPlane, retErr error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if retErr != nil {
			closeAll()
		}
	}()
	cache, err := blockcache.New(int64(cfg.Cache.Size), blockcache.WithBlockSize(int(cfg.Cache.BlockSize)))
	if err != nil {
		return nil, err
	}
	closers = append(closers, cache.Close)
	client := newRegistryClient(cfg)
	record := tasks.New(cache)
	id, stopRenewal, err := tlsIdentity(ctx, cfg) // mutual TLS with peers and schedulers, if configured
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() error { stopRenewal(); return nil })
	seeds, err := seed.New(filepath.Join(cfg.Root, "layers"), cache, client, seed.WithObserver(record))
	if err != nil {
		return nil, err
	}
	closers = append(closers, seeds.Close)

	var (
		sched  p2p.Scheduler
		server *peer.Server
		// The scheduler client needs the node (to seed, to report its download rate) and
		// the node needs the client: the client reaches the node through this.
		nodeRef atomic.Pointer[p2p.Node]
	)
	if cfg.P2P.Address != "" {
		server = peer.NewServer(record, peer.WithSlots(cfg.P2P.UploadSlots), peer.WithGate(nodeGate{&nodeRef}))
		ln, err := net.Listen("tcp", cfg.P2P.Address)
		if err != nil {
			return nil, fmt.Errorf("block service: %w", err)
		}
		if id != nil {
			ln = tls.NewListener(ln, id.ServerConfig())
		}
		go func() {
			if err := server.Serve(ctx, ln); err != nil {
				log.G(ctx).WithError(err).Error("block service stopped")
			}
		}()
		closers = append(closers, server.Close)
		log.G(ctx).WithField("address", ln.Addr().String()).Info("serving blocks to peers")
		if len(cfg.P2P.Schedulers) > 0 {
			c, err := newSchedulerClient(ctx, cfg, server, &nodeRef, id, client)
			if err != nil {
				return nil, err
			}
			closers = append(closers, c.Close)
			sched = c
		}
	}
	src := metrics.Sources{Cache: cache, CacheSize: int64(cfg.Cache.Size), Downloaded: func() int64 {
		if n := nodeRef.Load(); n != nil {
			return n.DownloadedBytes()
		}
		return 0
	}}
	if server != nil {
		src.Uploaded = server.UploadedBytes
	}
	dm := metrics.NewDataPlane(src)
	nopts := []p2p.NodeOption{p2p.WithBlobRanges(client), p2p.WithFetchObserver(dm.ObserveFetch), p2p.WithRegistryAccess(client)}
	if id != nil {
		nopts = append(nopts, p2p.WithPeerTLS(id.ClientConfig()))
	}
	if cfg.Lazy.Stargz {
		nopts = append(nopts, p2p.WithStargzLayers())
	}
	node := p2p.NewNode(cache, record, seeds, sched, nopts...)
	nodeRef.Store(node)
	closers = append(closers, node.Close)
	bs := blobs.New(cache, client)
	mopts := []fusemanager.MounterOption{fusemanager.WithOpObserver(dm.ObserveFUSE)}
	if cfg.Lazy.Stargz {
		mopts = append(mopts, fusemanager.WithStargz(node))
	}
	m := fusemanager.NewMounter(node, mopts...)
	closers = append(closers, func() error { m.Close(); return nil })
	return &DataPlane{mounter: m, blobs: bs, node: node, metrics: dm, close: closeAll}, nil
}

// hostID is this node's id at the schedulers: p2p.host_id, or hostname-advertise_address.
func hostID(cfg snapshotter.Config) string {
	if cfg.P2P.HostID != "" {
		return cfg.P2P.HostID
	}
	advertise := cfg.P2P.AdvertiseAddress
	if advertise == "" {
		advertise = cfg.P2P.Address
	}
	hostname, _ := os.Hostname()
	return hostname + "-" + advertise
}

// tlsIdentity returns the node's mutual-TLS identity from cfg, or nil without one (or without
// p2p.address, when the node speaks to no peer or scheduler). With a
// bootstrap token it gets its certificate from the first scheduler, into root/tls/, unless a
// valid one is there, and keeps it renewed until stop is called.
func tlsIdentity(ctx context.Context, cfg snapshotter.Config) (_ *tlsfiles.Identity, stop func(), _ error) {
	t := cfg.P2P.TLS
	if t.CA == "" || cfg.P2P.Address == "" { // no TLS, or no P2P to speak it on
		return nil, func() {}, nil
	}
	files := tlsfiles.Files{CA: t.CA, Cert: t.Cert, Key: t.Key}
	if t.BootstrapToken == "" {
		id, err := tlsfiles.Load(files)
		return id, func() {}, err
	}
	files.Cert, files.Key = filepath.Join(cfg.Root, "tls", "cert.pem"), filepath.Join(cfg.Root, "tls", "key.pem")
	sched, host := cfg.P2P.Schedulers[0], hostID(cfg)
	id, err := tlsfiles.Load(files)
	if err != nil || !id.ValidFor(time.Minute) {
		if _, err := scheduling.ObtainCertificate(ctx, sched, t.BootstrapToken, host, files); err != nil {
			return nil, nil, fmt.Errorf("p2p.tls.bootstrap_token: %w", err)
		}
		if id, err = tlsfiles.Load(files); err != nil {
			return nil, nil, err
		}
		log.G(ctx).WithFields(log.Fields{"scheduler": sched, "host": host}).Info("got this node's certificate from the scheduler")
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		scheduling.RenewCertificates(rctx, sched, host, id, files)
	}()
	return id, func() { cancel(); <-done }, nil
}

// newSchedulerClient connects to the schedulers of cfg as the host cfg describes; node is
// set once the node exists.
func newSchedulerClient(ctx context.Context, cfg snapshotter.Config, server *peer.Server, node *atomic.Pointer[p2p.Node], tlsID *tlsfiles.Identity, access p2p.RegistryAccess) (*scheduling.Client, error) {
	ring, err := scheduling.NewRing(ctx, cfg.P2P.Schedulers, time.Duration(cfg.P2P.SchedulerCooldown), net.DefaultResolver, time.Now)
	if err != nil {
		return nil, err
	}
	advertise := cfg.P2P.AdvertiseAddress
	if advertise == "" {
		advertise = cfg.P2P.Address
	}
	hostname, _ := os.Hostname()
	id := hostID(cfg)
	if id == "" {
		return nil, errors.New("p2p: no host id")
	}
	host := scheduling.Host{
		ID: id, Hostname: hostname, BlockAddress: advertise, IDC: cfg.P2P.IDC, Location: cfg.P2P.Location, Seed: cfg.P2P.Seed,
		UploadCapacity: uint64(cfg.P2P.UploadCapacity), DownloadCapacity: uint64(cfg.P2P.DownloadCapacity), UploadSlots: cfg.P2P.UploadSlots,
	}
	state := func() *schedulerv1.HostState {
		st := server.State()
		hs := &schedulerv1.HostState{UploadRate: uint64(st.UploadRate), FreeUploadSlots: uint32(st.FreeSlots), Load: st.Load}
		if n := node.Load(); n != nil {
			hs.DownloadRate = uint64(n.DownloadRate())
		}
		return hs
	}
	// Any host can be asked to warm a task ahead of a start (p2pctl prefetch --scheduler).
	opts := []scheduling.Option{scheduling.WithWarmHandler(func(ctx context.Context, src seed.Source, files []string, all bool) (int64, error) {
		n := node.Load()
		if n == nil {
			return 0, errors.New("the node is not started yet")
		}
		var warmed int64 // progress calls come one at a time
		err := n.Prefetch(ctx, src, p2p.Selection{Files: files, All: all}, func(done, _ int64) { warmed = done })
		return warmed, err
	})}
	if cfg.P2P.Seed {
		opts = append(opts, scheduling.WithSeedHandler(func(ctx context.Context, src seed.Source) {
			n := node.Load()
			for n == nil { // only in the instant between the client's start and the node's
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
				n = node.Load()
			}
			if err := n.SeedLayer(ctx, src); err != nil {
				log.G(ctx).WithError(err).WithField("diffID", src.DiffID).Warn("cannot seed a layer the scheduler sent")
			}
		}))
	}
	if tlsID != nil {
		opts = append(opts, scheduling.WithTLS(tlsID.ClientConfig()))
		opts = append(opts, scheduling.WithRegistryAccess(access)) // private layers are shared only over mutual TLS
	}
	return scheduling.New(host, state, ring, opts...), nil
}

// nodeGate is the block service's gate: the node's (p2p.Node.Admit), once there is a node;
// until then the node holds nothing, and peers are told so.
type nodeGate struct{ node *atomic.Pointer[p2p.Node] }

func (g nodeGate) Admit(ctx context.Context, identity string, task layer.TaskID) error {
	if n := g.node.Load(); n != nil {
		return n.Admit(ctx, identity, task)
	}
	return fmt.Errorf("task %s: this node is starting: %w", task, peer.ErrNotHeld)
}

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/server"
	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

type demoOptions struct {
	peers        int
	layerMB      int
	cacheMB      int
	blockSize    int
	mbit         float64 // each host's upload cap
	registryMbit float64
	topology     string
	json         bool
}

// demoSummary is what --json prints.
type demoSummary struct {
	Peers         int     `json:"peers"`
	Topology      string  `json:"topology"`
	LayerBytes    int64   `json:"layer_bytes"`
	Seconds       float64 `json:"seconds"`
	BoundSeconds  float64 `json:"bound_seconds"`
	RegistryBytes int64   `json:"registry_bytes"`
	BlobBytes     int64   `json:"blob_bytes"`
	PeerBytes     int64   `json:"peer_bytes"`
	FilesChecked  int     `json:"files_checked"`
	FUSE          bool    `json:"fuse"`
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Distribute a generated image over a local P2P cluster, with nothing to set up",
		Long: `Starts, in this process and on loopback, an OCI registry holding a generated three-layer
image, a scheduler, a seed and --peers peers (each a node's data plane: block cache, block
server, scheduler client), every host's uploads capped at --rate Mbit/s and the registry's at
--registry-rate. Every peer then fetches every layer through the P2P network, verified
against its diffID, as a pull would. It prints each layer's tree or DAG as the scheduler saw
it, the time beside the theoretical bound (Kumar and Ross), and the bytes that came from the
registry and from peers, then reads every file back through one peer's cache. As root, with
/dev/fuse, it also mounts a layer over FUSE and reads files from it.

The scheduler's status page is served while it runs; its address is printed first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.peers, "peers", 8, "peers besides the seed")
	f.IntVar(&o.layerMB, "layer-size", 32, "size of the largest generated layer in MB")
	f.IntVar(&o.cacheMB, "cache-size", 96, "block cache size of each host in MiB")
	f.IntVar(&o.blockSize, "block-size", layer.DefaultBlockSize, "block size in bytes")
	f.Float64Var(&o.mbit, "rate", 200, "upload cap of every host in Mbit/s")
	f.Float64Var(&o.registryMbit, "registry-rate", 200, "upload cap of the registry in Mbit/s")
	f.StringVar(&o.topology, "topology", string(scheduler.ModeDAG), `the scheduler's topology: "dag" or "tree"`)
	f.BoolVar(&o.json, "json", false, "print a JSON summary instead of the report")
	return cmd
}

// demoLayer is a generated layer and the tar stream it was made from.
type demoLayer struct {
	name  string
	files []layertest.File
	raw   []byte
}

func runDemo(ctx context.Context, w io.Writer, o demoOptions) error {
	if o.peers < 1 {
		return fmt.Errorf("--peers %d: want at least 1", o.peers)
	}
	out := w
	if o.json {
		out = io.Discard
	}
	sum := demoSummary{Peers: o.peers, Topology: o.topology}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	rate, regRate := o.mbit*1e6/8, o.registryMbit*1e6/8
	reg, err := startRegistry(regRate)
	if err != nil {
		return err
	}
	defer reg.stop()
	layers, err := makeLayers(o.layerMB)
	if err != nil {
		return err
	}
	ref := reg.addr + "/demo/app:v1"
	if err := pushImage(ref, layers); err != nil {
		return err
	}
	client := registry.New(registry.WithInsecureRegistries(reg.addr))
	img, err := client.Resolve(ctx, ref, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		return fmt.Errorf("resolve %s: %w", ref, err)
	}
	reg.served.Store(0) // the push and the image's config are not the distribution

	sched, err := startDemoScheduler(ctx, scheduler.Mode(o.topology))
	if err != nil {
		return err
	}
	defer sched.stop()
	fmt.Fprintf(out, "registry   %s: %d layers, %s of blobs, uploads at %.0f Mbit/s\n", ref, len(img.Layers), mb(blobBytes(img)), o.registryMbit)
	fmt.Fprintf(out, "scheduler  %s (%s); status page http://%s/\n", sched.addr, o.topology, sched.statusAddr)

	dir, err := os.MkdirTemp("", "p2pctl-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var nodes []*demoNode
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i := range o.peers + 1 {
		name := fmt.Sprintf("peer%d", i)
		if i == 0 {
			name = "seed0"
		}
		n, err := startDemoNode(ctx, name, dir, sched.addr, client, i == 0, rate, int64(o.cacheMB)<<20, o.blockSize)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	if err := sched.waitSeeds(ctx, 1); err != nil {
		return err
	}
	fmt.Fprintf(out, "hosts      a seed and %d peers on loopback, uploads at %.0f Mbit/s each\n\n", o.peers, o.mbit)

	srcs := make([]seed.Source, len(img.Layers))
	for i, l := range img.Layers {
		srcs[i] = seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID}
	}
	took, err := distribute(ctx, nodes[1:], srcs)
	if err != nil {
		return err
	}

	sc, err := newStatusClient(sched.statusAddr)
	if err != nil {
		return err
	}
	var stream int64
	for i, src := range srcs {
		t, err := sc.task(ctx, src.DiffID.String())
		if err != nil {
			return err
		}
		stream += int64(t.Size)
		fmt.Fprintf(out, "layer %d, %s:\n", i+1, layers[i].name)
		printTree(out, t)
		fmt.Fprintln(out)
	}
	var fromPeers int64
	for _, n := range nodes {
		fromPeers += n.server.UploadedBytes()
	}
	bound := kumarRoss(float64(stream), float64(blobBytes(img)), regRate, rate, o.peers)
	sum.LayerBytes, sum.Seconds, sum.BoundSeconds = stream, took.Seconds(), bound.Seconds()
	sum.RegistryBytes, sum.BlobBytes, sum.PeerBytes = reg.served.Load(), blobBytes(img), fromPeers
	fmt.Fprintf(out, "distributed %s of layers to %d peers in %s: %.2f× the bound of %s\n", mb(stream), o.peers,
		took.Round(time.Millisecond), took.Seconds()/bound.Seconds(), bound.Round(time.Millisecond))
	fmt.Fprintf(out, "bytes      %s from the registry (%.2f copies of the blobs), %s between peers and seed\n",
		mb(reg.served.Load()), float64(reg.served.Load())/float64(blobBytes(img)), mb(fromPeers))

	peer := nodes[len(nodes)-1]
	seeded := make([]*seed.Layer, len(srcs))
	for i, src := range srcs {
		if seeded[i], err = peer.node.Layer(ctx, src); err != nil {
			return err
		}
	}
	files, bytesRead, readTime, err := verifyFiles(ctx, seeded, layers)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "read back  %d files, %s, through %s's cache in %s: all match the layers they came from\n",
		files, mb(bytesRead), peer.name, readTime.Round(time.Millisecond))
	if sum.FUSE, err = demoFUSE(ctx, out, peer, srcs[1], layers[1], dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	if o.json {
		sum.FilesChecked = files
		return writeJSON(w, sum)
	}
	return nil
}

// distribute has every peer fetch every layer, verified, at once, and returns how long it
// took for all.
func distribute(ctx context.Context, peers []*demoNode, srcs []seed.Source) (time.Duration, error) {
	start := time.Now()
	var bar *progress
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar = newProgress(os.Stderr, "distributing", 0)
	}
	var total int64
	for _, s := range srcs {
		total += s.Blob.Size
	}
	g, gctx := errgroup.WithContext(ctx)
	var done atomic.Int64
	for _, p := range peers {
		for _, src := range srcs {
			g.Go(func() error {
				if err := p.node.Warm(gctx, src); err != nil {
					return fmt.Errorf("%s: layer %s: %w", p.name, src.DiffID, err)
				}
				if bar != nil { // progress in blob bytes, the layers' sizes as pulled
					bar.set(done.Add(src.Blob.Size), total*int64(len(peers)))
				}
				return nil
			})
		}
	}
	err := g.Wait()
	if bar != nil {
		bar.done()
	}
	return time.Since(start), err
}

// kumarRoss returns the least time in which n peers, each uploading at u bytes/s, can all
// get stream bytes from a seed uploading at u that reads blob bytes from a registry uploading
// at reg: max(blob/reg, stream/u, n·stream/(u + n·u)) (DESIGN-NOTES §5; downloads uncapped).
func kumarRoss(stream, blob, reg, u float64, n int) time.Duration {
	t := max(blob/reg, stream/u, float64(n)*stream/(u+float64(n)*u))
	return time.Duration(t * float64(time.Second))
}

func blobBytes(img *registry.Image) int64 {
	var n int64
	for _, l := range img.Layers {
		n += l.Descriptor.Size
	}
	return n
}

// demoFUSE mounts the layer src of node over FUSE and reads its files back, as root with
// /dev/fuse, and reports whether it did; otherwise it says why it does not.
func demoFUSE(ctx context.Context, out io.Writer, node *demoNode, src seed.Source, dl demoLayer, dir string) (bool, error) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(out, "fuse       skipped: mounting a layer needs root (run the demo as root to see it)")
		return false, nil
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(out, "fuse       skipped: no /dev/fuse")
		return false, nil
	}
	m := fusemanager.NewMounter(node.node)
	defer m.Close()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return false, err
	}
	if err := m.Mount(ctx, mnt, src, nil); err != nil {
		return false, fmt.Errorf("fuse: %w", err)
	}
	defer m.Unmount(context.WithoutCancel(ctx), mnt)
	start := time.Now()
	n, read := 0, int64(0)
	for _, f := range dl.files {
		if f.Header.Typeflag != tar.TypeReg || n >= 200 {
			continue
		}
		got, err := os.ReadFile(filepath.Join(mnt, f.Header.Name))
		if err != nil {
			return false, fmt.Errorf("fuse: %w", err)
		}
		if !bytes.Equal(got, f.Data) {
			return false, fmt.Errorf("fuse: %s read through the mount differs from the layer's", f.Header.Name)
		}
		n, read = n+1, read+int64(len(got))
	}
	fmt.Fprintf(out, "fuse       %s mounted at %s: %d files (%s) read and checked in %s\n", dl.name, mnt, n, mb(read), time.Since(start).Round(time.Millisecond))
	return true, nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// demoRegistry is the in-process registry: its address, its counter of blob bytes sent,
// and how to stop it.
type demoRegistry struct {
	addr   string
	served atomic.Int64
	stop   func()
}

// startRegistry serves an empty registry on loopback, its uploads capped at rate bytes/s.
func startRegistry(rate float64) (*demoRegistry, error) {
	ln, err := listenPaced(rate)
	if err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}
	r := &demoRegistry{addr: ln.Addr().String()}
	inner := ggcrregistry.New(ggcrregistry.Logger(discardLogger()))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			w = countingResponse{ResponseWriter: w, n: &r.served}
		}
		inner.ServeHTTP(w, req)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	r.stop = func() { srv.Close() }
	return r, nil
}

type countingResponse struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingResponse) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// demoScheduler is a scheduler served on loopback, with its status page.
type demoScheduler struct {
	core             *scheduler.Scheduler
	addr, statusAddr string
	stop             func()
}

// waitSeeds waits until seeds seed hosts can be asked to seed (they watch the scheduler;
// peers announce themselves with their first task), so that the first layer does not go to
// a peer sent back to the source instead.
func (s *demoScheduler) waitSeeds(ctx context.Context, seeds int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.core.Stats()
		if st.Seeds >= seeds {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the scheduler sees %d seed hosts after 10 s; want %d", st.Seeds, seeds)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func startDemoScheduler(ctx context.Context, mode scheduler.Mode) (*demoScheduler, error) {
	core, err := scheduler.New(scheduler.WithTopology(mode, scheduler.DefaultFanOut))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		core.Close()
		return nil, err
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		core.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = server.Serve(ctx, ln, core, time.Second) // closes core
	}()
	web := &http.Server{Handler: status.Handler(core), ReadHeaderTimeout: 10 * time.Second}
	go web.Serve(sln)
	return &demoScheduler{core: core, addr: ln.Addr().String(), statusAddr: sln.Addr().String(), stop: func() {
		web.Close()
		cancel()
		<-served
	}}, nil
}

func makeLayers(largestMB int) ([]demoLayer, error) {
	specs := []demoLayer{
		{name: "every entry type", files: layertest.EveryType()},
		{name: "application", files: layertest.Generated(1, int64(largestMB)<<20, 3000)},
		{name: "data", files: layertest.Generated(2, int64(largestMB)<<18, 800)},
	}
	for i := range specs {
		raw, err := layertest.Tar(specs[i].files)
		if err != nil {
			return nil, err
		}
		specs[i].raw = raw
	}
	return specs, nil
}

func pushImage(ref string, layers []demoLayer) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img := empty.Image
	for _, l := range layers {
		raw := l.raw
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.name, err)
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/sh"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// verifyFiles reads every regular file of every layer through the block cache and compares it
// with the file the layer was made from.
func verifyFiles(ctx context.Context, seeded []*seed.Layer, layers []demoLayer) (int, int64, time.Duration, error) {
	var files int
	var total int64
	start := time.Now()
	for i, sl := range seeded {
		x := sl.Index
		want := map[string][32]byte{}
		for _, f := range layers[i].files {
			if n, err := layer.CleanName(f.Header.Name); err == nil && len(f.Data) > 0 {
				want[n] = sha256.Sum256(f.Data)
			}
		}
		for j := range x.Entries {
			e, err := x.Resolve(&x.Entries[j])
			if err != nil {
				return 0, 0, 0, err
			}
			if e.Type != layer.TypeRegular || e.Size == 0 {
				continue
			}
			buf := make([]byte, e.Size)
			if n, err := sl.ReadStreamAt(ctx, buf, e.Offset); err != nil || int64(n) != e.Size {
				return 0, 0, 0, fmt.Errorf("read %s: %d of %d bytes: %w", x.Entries[j].Name, n, e.Size, err)
			}
			if sum, ok := want[e.Name]; !ok || sum != sha256.Sum256(buf) {
				return 0, 0, 0, fmt.Errorf("file %s read through the cache differs from the layer's", x.Entries[j].Name)
			}
			files++
			total += e.Size
		}
	}
	return files, total, time.Since(start), nil
}

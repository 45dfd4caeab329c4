package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/scheduling"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// prefetchResult is one layer's outcome, as --json prints it.
type prefetchResult struct {
	Layer   int     `json:"layer"`
	DiffID  string  `json:"diff_id"`
	Blob    string  `json:"blob"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

func newPrefetchCommand() *cobra.Command {
	var (
		root, platform, hostsDir, sched string
		insecure, files                 []string
		all, asJSON                     bool
		hosts                           uint32
		tlsFiles                        tlsfiles.Files
	)
	cmd := &cobra.Command{
		Use:   "prefetch IMAGE",
		Short: "Warm an image's blocks into the node's cache through the P2P network, before a container needs them",
		Long: `prefetch resolves IMAGE and asks the node's daemon to warm blocks of each of its layers into
its cache, block by block, through the P2P network: the daemon registers each layer with the
scheduler, which has a seed read it from the registry once, and fetches the blocks from its
parents; from then on the node serves them to its peers as well. A container started on the
node after it reads those blocks from memory, and nothing from the registry.

--files warms the blocks holding the files that match (path patterns as in path.Match, no
leading slash; "dir/**" for everything under dir; repeatable); --all the whole layers. With
neither, each layer's start set: an eStargz layer's files before its prefetch landmark (its
TOC alone if the builder marked none), and the whole of a layer that cannot say.

Each layer shows its progress (bytes, rate, ETA) on a terminal, and one line when done. The
exit status is 0 only if everything asked for is warm.

With --scheduler HOST:PORT (a scheduler's gRPC address) the fleet warms the image instead of
this node: the scheduler sends the request to every host that watches it, or to --hosts of
them chosen by the layer, and each warms it as above, through the P2P network, and reports
back; the command waits for the reports and shows, per layer, how many hosts are warm.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && len(files) > 0 {
				return errors.New("--all and --files: choose one")
			}
			ctx := cmd.Context()
			var p ocispec.Platform
			if platform != "" {
				var err error
				if p, err = platforms.Parse(platform); err != nil {
					return fmt.Errorf("--platform: %w", err)
				}
			}
			opts := []registry.Option{registry.WithInsecureRegistries(insecure...)}
			if hostsDir != "" {
				opts = append(opts, registry.WithHostsDir(hostsDir))
			}
			img, err := registry.New(opts...).Resolve(ctx, args[0], p)
			if err != nil {
				return err
			}
			sel := p2p.Selection{Files: files, All: all}
			if sched != "" {
				return prefetchFleet(ctx, cmd.OutOrStdout(), sched, tlsFiles, img, sel, hosts, asJSON)
			}
			control, err := dataPlane(ctx, root)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var results []prefetchResult
			failed := 0
			for i, l := range img.Layers {
				src := seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID}
				var bar *progress
				if !asJSON && term.IsTerminal(int(os.Stderr.Fd())) {
					bar = newProgress(os.Stderr, fmt.Sprintf("layer %d %s", i, shortID(l.Descriptor.Digest.String())), 0)
				}
				var warmed int64
				start := time.Now()
				err := control.PrefetchBlocks(ctx, src, sel, func(done, total int64) {
					warmed = done
					if bar != nil {
						bar.set(done, total)
					}
				})
				if bar != nil {
					bar.done()
				}
				r := prefetchResult{Layer: i, DiffID: l.DiffID.String(), Blob: l.Descriptor.Digest.String(), Bytes: warmed, Seconds: time.Since(start).Seconds()}
				if err != nil {
					r.Error = err.Error()
					failed++
				}
				results = append(results, r)
				if !asJSON {
					status := fmt.Sprintf("%s warm in %.2f s (%s)", size(uint64(r.Bytes)), r.Seconds, orDash(rate(float64(r.Bytes)/max(r.Seconds, 1e-9))))
					if err != nil {
						status = "FAILED: " + r.Error
					}
					fmt.Fprintf(out, "layer %d %s  %s\n", i, shortID(r.Blob), status)
				}
			}
			if asJSON {
				if err := writeJSON(out, results); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d layers not warm", failed, len(img.Layers))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", snapshotter.DefaultRoot, "the daemon's root directory (its data-plane socket is there)")
	f.StringVar(&platform, "platform", "", "platform of a multi-platform image (default: this host's)")
	f.StringVar(&hostsDir, "hosts-dir", "", "containerd certs.d directory of hosts.toml files")
	f.StringArrayVar(&insecure, "insecure-registry", nil, "registry (host or host:port) reached over plain HTTP; repeatable")
	f.StringArrayVar(&files, "files", nil, `warm the blocks of the files matching this pattern ("etc/*.conf", "usr/lib/**"); repeatable`)
	f.BoolVar(&all, "all", false, "warm the whole layers")
	f.BoolVar(&asJSON, "json", false, "print the outcome of each layer as JSON")
	f.StringVar(&sched, "scheduler", "", "warm the fleet: the gRPC address (host:port) of a scheduler the hosts watch")
	f.Uint32Var(&hosts, "hosts", 0, "with --scheduler, how many hosts warm each layer (0: every host)")
	f.StringVar(&tlsFiles.CA, "tls-ca", "", "with --scheduler, the CA of the schedulers' mutual TLS (PEM)")
	f.StringVar(&tlsFiles.Cert, "tls-cert", "", "with --scheduler, this client's certificate (PEM)")
	f.StringVar(&tlsFiles.Key, "tls-key", "", "with --scheduler, this client's key (PEM)")
	return cmd
}

// fleetResult is one layer's outcome of a fleet prefetch, as --json prints it.
type fleetResult struct {
	Layer  int                         `json:"layer"`
	DiffID string                      `json:"diff_id"`
	Hosts  []*schedulerv1.HostPrefetch `json:"hosts"`
}

// prefetchFleet asks the scheduler at addr to have hosts warm each layer of img, and waits
// for their reports.
func prefetchFleet(ctx context.Context, out io.Writer, addr string, tf tlsfiles.Files, img *registry.Image, sel p2p.Selection, hosts uint32, asJSON bool) error {
	creds := insecure.NewCredentials()
	if tf.Enabled() {
		id, err := tlsfiles.Load(tf)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(id.ClientConfig())
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("--scheduler %s: %w", addr, err)
	}
	defer conn.Close()
	cli := schedulerv1.NewSchedulerClient(conn)
	var results []fleetResult
	failed := 0
	for i, l := range img.Layers {
		task := l.DiffID.String()
		ts := scheduling.TaskSource(seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID})
		resp, err := cli.PrefetchTask(ctx, &schedulerv1.PrefetchTaskRequest{TaskId: task, Source: ts, Files: sel.Files, All: sel.All, Hosts: hosts})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		start := time.Now()
		var st *schedulerv1.GetPrefetchResponse
		for {
			if st, err = cli.GetPrefetch(ctx, &schedulerv1.GetPrefetchRequest{TaskId: task}); err != nil {
				return fmt.Errorf("layer %d: %w", i, err)
			}
			if pendingHosts(st) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		warm, warmed := 0, uint64(0)
		for _, h := range st.Hosts {
			if h.State == schedulerv1.PrefetchState_PREFETCH_STATE_DONE {
				warm++
				warmed += h.WarmedBytes
			}
		}
		if warm < len(resp.HostIds) {
			failed++
		}
		results = append(results, fleetResult{Layer: i, DiffID: task, Hosts: st.Hosts})
		if !asJSON {
			fmt.Fprintf(out, "layer %d %s  warm on %d of %d hosts in %.2f s (%s warmed in all)\n", i, shortID(l.Descriptor.Digest.String()),
				warm, len(resp.HostIds), time.Since(start).Seconds(), size(warmed))
			for _, h := range st.Hosts {
				if h.State != schedulerv1.PrefetchState_PREFETCH_STATE_DONE {
					fmt.Fprintf(out, "  %s: FAILED: %s\n", h.HostId, h.Message)
				}
			}
		}
	}
	if asJSON {
		if err := writeJSON(out, results); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d layers not warm on every host asked", failed, len(img.Layers))
	}
	return nil
}

// pendingHosts counts the hosts that have not reported yet.
func pendingHosts(st *schedulerv1.GetPrefetchResponse) int {
	n := 0
	for _, h := range st.Hosts {
		if h.State == schedulerv1.PrefetchState_PREFETCH_STATE_ASKED {
			n++
		}
	}
	return n
}

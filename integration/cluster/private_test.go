package cluster

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// TestPrivateLayersOnlyToPeersWithAccess: the registry guards the repositories under team/
// with bearer tokens for one user's credentials, which every daemon has but one, the
// outsider: a member of the cluster, with a certificate of its CA, that cannot read those
// repositories. A private layer still reaches the insiders with one copy from the registry,
// peer to peer; the outsider gets none of it, whichever way it asks:
//
//   - its daemon, asked to warm the layer, fails: the registry refuses it, and the seed the
//     scheduler asks to read the layer for it refuses to read a private layer for others;
//   - asking an insider's block service for a block or the index, with its certificate, is
//     answered "forbidden";
//   - registering for the private task with a made-up token is refused by the scheduler,
//     which asks the registry;
//   - the scheduler says it may not read the task, and says an insider may.
//
// A public layer still reaches the outsider from its peers.
func TestPrivateLayersOnlyToPeersWithAccess(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewAuthority(t, "cluster CA")
	auth := containerdenv.NewTokenAuth("alice", "s3cret")
	auth.Enable() // pushes go to the registry over loopback, unguarded
	const outsider = "peer3"
	c := startEmptyCluster(t, Options{
		Name: "p2ppv", Subnet: netip.MustParsePrefix("10.213.21.0/24"), Peers: 4, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
		TLS: func(host string) tlsfiles.Files { return ca.Valid(t, dir, host) },
		Private: &Private{Auth: auth, Prefix: "team/", DockerConfig: func(host, registry string) string {
			if host == outsider {
				return ""
			}
			d, err := auth.DockerConfig(dir, registry)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	private, _ := pushLayer(ctx, t, c, "team/private:v1", 16<<20, 8)
	public, _ := pushLayer(ctx, t, c, "test/public:v1", 16<<20, 9)
	c.Registry.ResetCounters()

	insiders := c.Peers[:3]
	start := time.Now()
	for i, err := range warmAll(ctx, insiders, private) {
		if err != nil {
			t.Fatalf("insider %d: %v", i, err)
		}
	}
	t.Logf("private layer of %d MiB to %d insiders in %s; the registry sent %d blob bytes (%.2f copies)", private.Blob.Size>>20, len(insiders),
		time.Since(start).Round(time.Millisecond), c.Registry.BytesOf(private.Blob.Digest), float64(c.Registry.BytesOf(private.Blob.Digest))/float64(private.Blob.Size))
	if got := c.Registry.BytesOf(private.Blob.Digest); got != private.Blob.Size {
		t.Errorf("registry sent %d bytes of the private blob to the insiders; want one copy (%d): the others came from peers", got, private.Blob.Size)
	}

	// The outsider's daemon cannot have it.
	octx, ocancel := context.WithTimeout(ctx, time.Minute)
	err := c.Peers[3].Control.Warm(octx, private)
	ocancel()
	if err == nil {
		t.Fatal("the outsider's daemon warmed the private layer")
	}
	t.Logf("the outsider's daemon: %v", err)
	if got := c.Registry.BytesOf(private.Blob.Digest); got != private.Blob.Size {
		t.Errorf("the registry sent %d more bytes of the private blob after the outsider asked: a seed read it for the outsider", got-private.Blob.Size)
	}

	// Its certificate gets nothing from an insider's block service.
	task := layer.TaskIDFromDigest(private.DiffID)
	id, err := tlsfiles.Load(ca.Valid(t, dir, outsider))
	if err != nil {
		t.Fatal(err)
	}
	as := peer.NewClient(peer.WithClientTLS(id.ClientConfig()))
	defer as.Close()
	buf := make([]byte, 1<<20)
	for _, d := range insiders {
		if _, _, err := as.Block(ctx, d.Addr, task, 0, time.Second, buf); !errors.Is(err, peer.ErrForbidden) {
			t.Errorf("%s served the outsider a block of the private layer: %v", d.Name, err)
		}
		if _, _, err := as.Index(ctx, d.Addr, task, time.Second); !errors.Is(err, peer.ErrForbidden) {
			t.Errorf("%s served the outsider the private layer's index: %v", d.Name, err)
		}
	}
	// An insider's certificate is admitted by name.
	insiderID, err := tlsfiles.Load(ca.Valid(t, dir, insiders[1].Name))
	if err != nil {
		t.Fatal(err)
	}
	insider := peer.NewClient(peer.WithClientTLS(insiderID.ClientConfig()))
	defer insider.Close()
	if _, _, err := insider.Block(ctx, insiders[0].Addr, task, 0, time.Second, buf); err != nil {
		t.Errorf("an insider's certificate was refused a block: %v", err)
	}

	// The scheduler refuses a made-up proof, and knows who may read the task.
	conn, err := grpc.NewClient(c.Schedulers[0].Addr, grpc.WithTransportCredentials(credentials.NewTLS(id.ClientConfig())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sched := schedulerv1.NewSchedulerClient(conn)
	src := &schedulerv1.TaskSource{Registry: private.Host, Repository: private.Repository, BlobDigest: private.Blob.Digest.String(),
		BlobMediaType: private.Blob.MediaType, BlobSize: uint64(private.Blob.Size), DiffId: private.DiffID.String()}
	privateTask := schedulerv1.PrivateTaskID(src)
	_, err = sched.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: outsider, TaskId: privateTask, BlockSize: 1 << 20, Source: src,
		Access: &schedulerv1.RegistryAccess{Authorization: "Bearer 00112233445566778899aabbccddeeff"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("registering with a made-up token: %v; want PermissionDenied", err)
	}
	for name, want := range map[string]bool{outsider: false, insiders[0].Name: true} {
		resp, err := sched.CheckAccess(ctx, &schedulerv1.CheckAccessRequest{TaskId: privateTask, Identity: name})
		if err != nil || resp.GetAllowed() != want {
			t.Errorf("may %s read the private task? %v, %v; want %v", name, resp.GetAllowed(), err, want)
		}
	}

	// Public layers are still shared with everyone; the same distribution as the private
	// layer's, side by side, shows what proving access costs.
	c.Registry.ResetCounters()
	start = time.Now()
	for i, err := range warmAll(ctx, insiders, public) {
		if err != nil {
			t.Errorf("insider %d, public layer: %v", i, err)
		}
	}
	t.Logf("public layer of %d MiB to the same %d hosts in %s", public.Blob.Size>>20, len(insiders), time.Since(start).Round(time.Millisecond))
	if err := c.Peers[3].Control.Warm(ctx, public); err != nil {
		t.Errorf("the outsider, public layer: %v", err)
	}
	if got := c.Registry.BytesOf(public.Blob.Digest); got != public.Blob.Size {
		t.Errorf("registry sent %d bytes of the public blob; want one copy (%d)", got, public.Blob.Size)
	}
}

package scheduling

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/issuer"
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

func startScheduler(t *testing.T, addr string, opts ...grpc.ServerOption) *schedulerProc {
	t.Helper()
	return startSchedulerWith(t, addr, nil, opts...)
}

// startSchedulerWith is startScheduler with options of the scheduler's core.
func startSchedulerWith(t *testing.T, addr string, core []scheduler.Option, opts ...grpc.ServerOption) *schedulerProc {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := scheduler.New(core...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &schedulerProc{addr: ln.Addr().String(), core: c, stop: cancel, done: make(chan error, 1)}
	go func() { sp.done <- server.Serve(ctx, ln, c, 0, opts...) }()
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
	reg, err := peer.Register(t.Context(), src, 1<<20, false)
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
	if _, err := c.Register(t.Context(), src, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	task := string(layer.TaskIDFromDigest(src.DiffID))
	if _, err := owner.core.Inspect(task); err != nil {
		t.Fatalf("the ring's owner does not know the task: %v", err)
	}
	owner.kill()
	start := time.Now()
	reg, err := c.Register(t.Context(), src, 1<<20, false)
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

// TestWarmTask: a host with a WarmHandler watches the scheduler; a PrefetchTask reaches the
// handler with the layer's source and selection, and the scheduler learns how it ended.
func TestWarmTask(t *testing.T) {
	sp := startScheduler(t, "")
	ring, err := NewRing(t.Context(), []string{sp.addr}, time.Minute, net.DefaultResolver, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		src   seed.Source
		files []string
	}
	calls := make(chan call, 1)
	c := New(Host{ID: "h0", BlockAddress: "127.0.0.1:10"}, func() *schedulerv1.HostState { return &schedulerv1.HostState{} }, ring,
		WithWarmHandler(func(_ context.Context, src seed.Source, files []string, all bool) (int64, error) {
			calls <- call{src, files}
			return 1234, nil
		}))
	t.Cleanup(func() { c.Close() })

	src := source(1)
	ts := &schedulerv1.TaskSource{Registry: src.Host, Repository: src.Repository, BlobDigest: src.Blob.Digest.String(),
		BlobMediaType: src.Blob.MediaType, BlobSize: uint64(src.Blob.Size), DiffId: src.DiffID.String()}
	var resp *schedulerv1.PrefetchTaskResponse
	deadline := time.Now().Add(10 * time.Second)
	for { // the host watches the scheduler soon after it starts
		resp, err = sp.core.PrefetchTask(t.Context(), &schedulerv1.PrefetchTaskRequest{TaskId: src.DiffID.String(), Source: ts, Files: []string{"bin/*"}})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || len(resp.HostIds) != 1 || resp.HostIds[0] != "h0" {
		t.Fatalf("PrefetchTask: got %v, %v; want h0 asked", resp, err)
	}
	select {
	case got := <-calls:
		if got.src.DiffID != src.DiffID || got.src.Repository != src.Repository || len(got.files) != 1 || got.files[0] != "bin/*" {
			t.Errorf("the handler got %+v; want the layer and bin/*", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the WarmTask never reached the handler")
	}
	for {
		st, err := sp.core.GetPrefetch(t.Context(), &schedulerv1.GetPrefetchRequest{TaskId: src.DiffID.String()})
		if err != nil {
			t.Fatal(err)
		}
		if h := st.Hosts[0]; h.State == schedulerv1.PrefetchState_PREFETCH_STATE_DONE {
			if h.WarmedBytes != 1234 {
				t.Errorf("reported %d bytes warmed; want 1234", h.WarmedBytes)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host never reported the warm done: %v", st.Hosts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSchedulerOverMutualTLS: a scheduler serving mutual TLS takes a host whose certificate
// the cluster's CA signed, and refuses one of another CA.
func TestSchedulerOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewAuthority(t, "cluster"), tlstest.NewAuthority(t, "other")
	identity := func(f tlsfiles.Files) *tlsfiles.Identity { return tlstest.Load(t, f) }
	sp := startScheduler(t, "", grpc.Creds(credentials.NewTLS(identity(ca.Valid(t, dir, "scheduler")).ServerConfig())))
	for _, tc := range []struct {
		name string
		tls  *tlsfiles.Identity
		ok   bool
	}{
		{"a host of the cluster", identity(ca.Valid(t, dir, "host")), true},
		{"a host of another CA", identity(other.Valid(t, dir, "rogue")), false},
		{"plaintext", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring, err := NewRing(t.Context(), []string{sp.addr}, time.Minute, net.DefaultResolver, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			var opts []Option
			if tc.tls != nil {
				opts = append(opts, WithTLS(tc.tls.ClientConfig()))
			}
			c := New(Host{ID: tc.name, BlockAddress: "127.0.0.1:10"}, func() *schedulerv1.HostState { return &schedulerv1.HostState{} }, ring, opts...)
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err = c.Register(ctx, source(2), 1<<20, false)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("registered")
			}
		})
	}
}

// TestCertificatesFromTheScheduler: a scheduler holding the CA's key issues a host its
// certificate for a bootstrap token, refuses a wrong token, serves only hosts with a
// certificate, and renews the host's certificate before it expires, with no restart.
func TestCertificatesFromTheScheduler(t *testing.T) {
	dir := t.TempDir()
	caFile, caKey := tlstest.NewAuthority(t, "cluster CA").WriteCA(t, dir)
	is, err := issuer.New(caFile, caKey, []string{"s3cret"}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, err := scheduler.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	opts := append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(is.ServerConfig("scheduler")))}, issuer.RequireClientCert()...)
	go func() { done <- server.ServeIssuing(ctx, ln, core, is, 0, opts...) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := ln.Addr().String()

	files := tlsfiles.Files{CA: caFile, Cert: filepath.Join(dir, "host", "cert.pem"), Key: filepath.Join(dir, "host", "key.pem")}
	if _, err := ObtainCertificate(t.Context(), addr, "wrong", "host1", files); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a wrong token: got %v; want PermissionDenied", err)
	}
	first, err := ObtainCertificate(t.Context(), addr, "s3cret", "host1", files)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tlsfiles.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	register := func(tlsCfg *tls.Config) error {
		ring, err := NewRing(t.Context(), []string{addr}, time.Minute, net.DefaultResolver, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		var opts []Option
		if tlsCfg != nil {
			opts = append(opts, WithTLS(tlsCfg))
		}
		c := New(Host{ID: "host1", BlockAddress: "127.0.0.1:10"}, func() *schedulerv1.HostState { return &schedulerv1.HostState{} }, ring, opts...)
		defer c.Close()
		rctx, rcancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer rcancel()
		_, err = c.Register(rctx, source(3), 1<<20, false)
		return err
	}
	if err := register(id.ClientConfig()); err != nil {
		t.Fatalf("with the issued certificate: %v", err)
	}
	noCert, err := tlsfiles.ServerOnlyConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := register(noCert); err == nil {
		t.Error("a host with no certificate registered")
	}

	rctx, rcancel := context.WithCancel(t.Context())
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		RenewCertificates(rctx, addr, "host1", id, files)
	}()
	defer func() {
		rcancel()
		<-renewed
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, notAfter, err := certificateLife(files.Cert); err == nil && notAfter.After(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed before it expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(first.Add(time.Second))) // the first certificate has expired
	if err := register(id.ClientConfig()); err != nil {
		t.Fatalf("after the first certificate expired, with the renewed one: %v", err)
	}
}

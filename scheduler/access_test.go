package scheduler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// registryProofs stands for the registry: the proofs it accepts and until when. The
// scheduler's own logic is under test here; the registry's check is package registry's
// (TestAccess), and both run together in the cluster test TestPrivateLayersOnlyToPeersWithAccess.
type registryProofs struct {
	good  map[string]time.Time
	calls int
}

func (r *registryProofs) VerifyAccess(_ context.Context, src *schedulerv1.TaskSource, proof string) (time.Time, error) {
	r.calls++
	if src.GetRegistry() != privateSource.Registry || src.GetRepository() != privateSource.Repository {
		return time.Time{}, fmt.Errorf("not the repository of the test: %w", errdefs.ErrNotFound)
	}
	if proof == "Bearer registry-down" {
		return time.Time{}, errors.New("HEAD: 503 Service Unavailable")
	}
	expires, ok := r.good[proof]
	if !ok {
		return time.Time{}, fmt.Errorf("HEAD: 401 Unauthorized: %w", errdefs.ErrUnauthenticated)
	}
	return expires, nil
}

var privateSource = &schedulerv1.TaskSource{Registry: "registry.test", Repository: "team/private", BlobDigest: taskID(998), DiffId: taskID(997)}

// asHost is ctx of a call over mutual TLS from a host whose certificate names name.
func asHost(ctx context.Context, name string) context.Context {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: name}}
	return grpcpeer.NewContext(ctx, &grpcpeer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
}

func TestPrivateTaskRegistration(t *testing.T) {
	proofs := &registryProofs{}
	e := newEnv(t, WithAccessVerifier(proofs))
	now := e.clk.Now()
	proofs.good = map[string]time.Time{"Bearer alice": now.Add(time.Minute), "Bearer carol": now.Add(2 * time.Minute)}
	for _, h := range []string{"alice", "bob", "carol", "mallory"} {
		e.announce(h, schedulerv1.HostType_HOST_TYPE_NORMAL)
	}
	e.announce("seed-1", schedulerv1.HostType_HOST_TYPE_SEED)
	e.watch("seed-1")
	private := schedulerv1.PrivateTaskID(privateSource)
	register := func(ctx context.Context, host, task, proof string, src *schedulerv1.TaskSource) (*schedulerv1.RegisterPeerResponse, error) {
		req := &schedulerv1.RegisterPeerRequest{HostId: host, TaskId: task, BlockSize: 1 << 20, Source: src}
		if proof != "" {
			req.Access = &schedulerv1.RegistryAccess{Authorization: proof}
		}
		return e.s.RegisterPeer(ctx, req)
	}

	// The first peer with a good proof reads the registry itself: no seed is asked, as no
	// seed proved it may read the repository.
	resp, err := register(asHost(e.ctx, "alice"), "alice", private, "Bearer alice", privateSource)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		t.Errorf("first peer of a private task: got %v; want it to read the registry itself", resp.Directive)
	}
	if e.s.Stats().SeedTriggers != 0 {
		t.Error("a seed was asked to read a private task")
	}
	if resp, err = register(asHost(e.ctx, "carol"), "carol", private, "Bearer carol", privateSource); err != nil {
		t.Fatal(err)
	}
	if got := ids(resp.Candidates); len(got) != 1 || peerOfHost(e.info(private), "alice").ID != got[0] {
		t.Errorf("carol's candidates %v; want alice's peer", got)
	}

	refusals := []struct {
		name, host, task, proof string
		ctx                     context.Context
		src                     *schedulerv1.TaskSource
	}{
		{"no certificate", "bob", private, "Bearer alice", e.ctx, privateSource},
		{"no proof", "bob", private, "", asHost(e.ctx, "bob"), privateSource},
		{"a proof the registry refuses", "mallory", private, "Bearer forged", asHost(e.ctx, "mallory"), privateSource},
		{"the same refused proof again", "mallory", private, "Bearer forged", asHost(e.ctx, "mallory"), privateSource},
		{"the private task without its source", "mallory", private, "Bearer forged", asHost(e.ctx, "mallory"), nil},
	}
	for _, r := range refusals {
		if _, err := register(r.ctx, r.host, r.task, r.proof, r.src); !errdefs.IsPermissionDenied(err) {
			t.Errorf("%s: got %v; want permission denied", r.name, err)
		}
	}
	if proofs.calls != 3 {
		t.Errorf("the registry was asked %d times; want 3 (alice, carol, and mallory's proof once)", proofs.calls)
	}
	// A registry that cannot answer is no refusal: the host may try again at once.
	for range 2 {
		if _, err := register(asHost(e.ctx, "bob"), "bob", private, "Bearer registry-down", privateSource); !errdefs.IsUnavailable(err) {
			t.Errorf("the registry cannot check the proof: got %v; want unavailable", err)
		}
	}
	if proofs.calls != 5 {
		t.Errorf("the registry was asked %d times; want 5 (the failed check is not kept)", proofs.calls)
	}
	proofs.calls = 3
	// Registering again within the token's lifetime costs the registry nothing.
	if _, err := register(asHost(e.ctx, "alice"), "alice", private, "Bearer alice", privateSource); err != nil || proofs.calls != 3 {
		t.Errorf("registering again: %v, %d calls to the registry", err, proofs.calls)
	}

	check := func(name string) *schedulerv1.CheckAccessResponse {
		t.Helper()
		resp, err := e.s.CheckAccess(e.ctx, &schedulerv1.CheckAccessRequest{TaskId: private, Identity: name})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := check("alice"); !r.Allowed || r.ValidForMs != uint64(time.Minute.Milliseconds()) {
		t.Errorf("alice: %v; want allowed for the token's minute", r)
	}
	for _, name := range []string{"bob", "mallory", "someone"} {
		if r := check(name); r.Allowed {
			t.Errorf("%s may read the private task", name)
		}
	}
	if r, err := e.s.CheckAccess(e.ctx, &schedulerv1.CheckAccessRequest{TaskId: taskID(1), Identity: "alice"}); err != nil || r.Allowed {
		t.Errorf("a task this scheduler does not know as private: %v, %v; want not allowed", r, err)
	}

	// Grants end with the tokens.
	e.clk.Advance(90 * time.Second)
	if check("alice").Allowed {
		t.Error("alice may still read the task after her token expired")
	}
	if !check("carol").Allowed {
		t.Error("carol's token, good for two minutes, no longer counts")
	}
	for _, h := range []string{"alice", "bob", "carol"} {
		e.keepalive(h)
	}
	e.s.Sweep(e.ctx)
	grants := -1
	e.s.mu.Lock()
	if task := e.s.tasks[private]; task != nil {
		grants = len(task.grants)
	}
	e.s.mu.Unlock()
	if grants != 1 {
		t.Errorf("%d grants after the sweep; want carol's alone", grants)
	}

	// The public task of the same layer is another task, open to all.
	public := schedulerv1.StreamTaskID(privateSource)
	if _, err := register(e.ctx, "bob", public, "", privateSource); err != nil {
		t.Errorf("the layer's public task: %v", err)
	}
}

func TestPrivateTaskWithoutVerifier(t *testing.T) {
	e := newEnv(t)
	e.announce("alice", schedulerv1.HostType_HOST_TYPE_NORMAL)
	_, err := e.s.RegisterPeer(asHost(e.ctx, "alice"), &schedulerv1.RegisterPeerRequest{HostId: "alice", TaskId: schedulerv1.PrivateTaskID(privateSource),
		BlockSize: 1 << 20, Source: privateSource, Access: &schedulerv1.RegistryAccess{Authorization: "Bearer alice"}})
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("got %v; want failed precondition: this scheduler cannot check access", err)
	}
}

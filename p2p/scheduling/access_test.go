package scheduling

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// tokenRegistry stands for a registry and its token service: each Access gets a new token,
// good for its lifetime, which VerifyAccess (the scheduler's check) honours.
type tokenRegistry struct {
	mu       sync.Mutex
	lifetime time.Duration
	issued   map[string]time.Time
}

func (r *tokenRegistry) Access(context.Context, string, string, digest.Digest) (registry.Access, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tok := fmt.Sprintf("Bearer token-%d", len(r.issued))
	r.issued[tok] = time.Now().Add(r.lifetime)
	return registry.Access{Private: true, Authorization: tok, Expires: r.issued[tok]}, nil
}

func (r *tokenRegistry) VerifyAccess(_ context.Context, _ *schedulerv1.TaskSource, proof string) (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	expires, ok := r.issued[proof]
	if !ok || !time.Now().Before(expires) {
		return time.Time{}, errors.New("401 Unauthorized")
	}
	return expires, nil
}

// TestProveAccessAgain: a node registers a private task with a token, over mutual TLS, and
// the scheduler grants it by its certificate's name until the token expires; a parent's
// refusal then has it prove access again with a fresh token.
func TestProveAccessAgain(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewAuthority(t, "cluster")
	reg := &tokenRegistry{lifetime: time.Second, issued: map[string]time.Time{}}
	sp := startSchedulerWith(t, "", []scheduler.Option{scheduler.WithAccessVerifier(reg)},
		grpc.Creds(credentials.NewTLS(tlstest.Load(t, ca.Valid(t, dir, "scheduler")).ServerConfig())))
	ring, err := NewRing(t.Context(), []string{sp.addr}, time.Minute, net.DefaultResolver, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Host{ID: "alice-host", BlockAddress: "127.0.0.1:1", UploadSlots: 4}, func() *schedulerv1.HostState { return &schedulerv1.HostState{} }, ring,
		WithTLS(tlstest.Load(t, ca.Valid(t, dir, "alice")).ClientConfig()), WithRegistryAccess(reg))
	t.Cleanup(func() { c.Close() })

	src := source(1)
	if _, err := c.Register(t.Context(), src, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	task := layer.TaskIDFromDigest(src.DiffID)
	may := func(name string) bool {
		t.Helper()
		ok, _, err := c.CheckAccess(t.Context(), task, name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !may("alice") || may("bob") {
		t.Fatalf("alice %v, bob %v; want alice alone admitted", may("alice"), may("bob"))
	}
	time.Sleep(1100 * time.Millisecond)
	if may("alice") {
		t.Fatal("alice still admitted after her token expired")
	}
	reg.mu.Lock()
	reg.lifetime = time.Minute
	reg.mu.Unlock()
	c.BlockFailed(task, 0, "parent", fetch.ReasonForbidden, errors.New("forbidden"))
	deadline := time.Now().Add(5 * time.Second)
	for !may("alice") {
		if time.Now().After(deadline) {
			t.Fatal("alice did not prove access again after a refusal")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

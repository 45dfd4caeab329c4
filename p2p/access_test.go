package p2p_test

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// repositoryAccess says every repository is private or public, as a registry would.
type repositoryAccess struct{ access registry.Access }

func (r repositoryAccess) Access(context.Context, string, string, digest.Digest) (registry.Access, error) {
	return r.access, nil
}

// grantingScheduler is a staticScheduler that admits the identities in allowed, counting
// the questions. The schedulers' own logic is tested in package scheduler, and the whole
// on real daemons in the cluster test TestPrivateLayersOnlyToPeersWithAccess.
type grantingScheduler struct {
	*staticScheduler
	allowed   map[string]bool
	questions atomic.Int64
}

func (g *grantingScheduler) CheckAccess(_ context.Context, _ layer.TaskID, identity string) (bool, time.Duration, error) {
	g.questions.Add(1)
	time.Sleep(10 * time.Millisecond) // concurrent callers overlap
	return g.allowed[identity], time.Minute, nil
}

func TestPrivateLayerAdmission(t *testing.T) {
	blob, src := testBlob(3 * testBlockSize)
	src.RandomAccess = true // the task is the blob (Blob)
	private := registry.Access{Private: true, Authorization: "Bearer token", Expires: time.Now().Add(time.Minute)}
	tests := []struct {
		name   string
		access registry.Access
		tls    bool
		// what the node does
		wantRegistered, wantPrivate, wantHolding int64
		// who it serves
		admitted, refused []string
	}{
		{name: "public layer", access: registry.Access{}, tls: true, wantRegistered: 1, wantHolding: 1,
			admitted: []string{"", "alice", "mallory"}},
		{name: "private layer over mutual TLS", access: private, tls: true, wantRegistered: 1, wantPrivate: 1, wantHolding: 1,
			admitted: []string{"alice"}, refused: []string{"", "mallory"}},
		{name: "private layer, no certificate", access: private, wantRegistered: 0,
			refused: []string{"", "alice", "mallory"}},
		{name: "private layer, registry without tokens", access: registry.Access{Private: true}, tls: true, wantRegistered: 0,
			refused: []string{"", "alice", "mallory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sched := &grantingScheduler{staticScheduler: newScheduler(p2p.BackToSource), allowed: map[string]bool{"alice": true}}
			opts := []p2p.NodeOption{p2p.WithRegistryAccess(repositoryAccess{tt.access})}
			if tt.tls {
				opts = append(opts, p2p.WithPeerTLS(&tls.Config{MinVersion: tls.VersionTLS13}))
			}
			n := newTestNode(t, blob, sched, false, opts...)
			r, err := n.Blob(t.Context(), src)
			if err != nil {
				t.Fatal(err)
			}
			if got := read(t, r, 0, 100); string(got) != string(blob[:100]) {
				t.Fatal("read the wrong bytes")
			}
			if got := sched.registered.Load(); got != tt.wantRegistered {
				t.Errorf("registered %d times; want %d", got, tt.wantRegistered)
			}
			if got := sched.private.Load(); got != tt.wantPrivate {
				t.Errorf("registered %d times as private; want %d", got, tt.wantPrivate)
			}
			if got := sched.holding.Load(); got != tt.wantHolding {
				t.Errorf("told the scheduler %d times it holds the blob; want %d", got, tt.wantHolding)
			}
			task := src.Task()
			for _, id := range tt.admitted {
				if err := n.Admit(t.Context(), id, task); err != nil {
					t.Errorf("%q refused: %v", id, err)
				}
			}
			for _, id := range tt.refused {
				if err := n.Admit(t.Context(), id, task); !errors.Is(err, peer.ErrForbidden) {
					t.Errorf("%q: got %v; want ErrForbidden", id, err)
				}
			}
			if err := n.SeedLayer(t.Context(), src); tt.access.Private && err == nil {
				t.Error("seeded a private layer for the scheduler")
			}
		})
	}
}

// TestAdmitAsksOnce: the many requests of a new child cost the scheduler one question, and
// the answer is kept.
func TestAdmitAsksOnce(t *testing.T) {
	blob, src := testBlob(2 * testBlockSize)
	src.RandomAccess = true
	sched := &grantingScheduler{staticScheduler: newScheduler(p2p.BackToSource), allowed: map[string]bool{"alice": true}}
	n := newTestNode(t, blob, sched, false, p2p.WithRegistryAccess(repositoryAccess{registry.Access{Private: true, Authorization: "Bearer token"}}),
		p2p.WithPeerTLS(&tls.Config{MinVersion: tls.VersionTLS13}))
	if _, err := n.Blob(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if err := n.Admit(t.Context(), "alice", src.Task()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := n.Admit(t.Context(), "alice", src.Task()); err != nil {
		t.Error(err)
	}
	if q := sched.questions.Load(); q != 1 {
		t.Errorf("the scheduler was asked %d times; want once", q)
	}
	// A task the node never asked the registry about (held since before a restart, or one
	// a seed is about to read) goes to no one until it does: as one it does not hold, which
	// peers ask for again.
	if err := n.Admit(t.Context(), "alice", layer.TaskIDFromDigest(digest.FromString("restored"))); !errors.Is(err, peer.ErrNotHeld) {
		t.Errorf("a layer of unknown privacy: got %v; want ErrNotHeld", err)
	}
}

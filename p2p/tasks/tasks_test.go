package tasks

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
)

const id = layer.TaskID("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func newRegistry(t *testing.T) (*Registry, *blockcache.Cache) {
	t.Helper()
	c, err := blockcache.New(1<<20, blockcache.WithBlockSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return New(c), c
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func TestTableVouching(t *testing.T) {
	d := []layer.BlockDigest{layer.DigestBlock([]byte("0")), layer.DigestBlock([]byte("1"))}
	for _, tc := range []struct {
		name     string
		setup    func(*Registry)
		from     int
		want     int // digests returned; -1 for ErrNotHeld, -2 for a timeout
		complete bool
	}{
		{"unknown task", func(*Registry) {}, 0, -1, false},
		{"relay does not vouch", func(r *Registry) { r.Expect(id); r.Landed(id, 0) }, 0, -1, false},
		{"seed pass before its first block waits", func(r *Registry) { r.StartPass(id) }, 0, -2, false},
		{"seed pass gives what it produced", func(r *Registry) { r.StartPass(id); r.Produced(id, 0, d[0]); r.Produced(id, 1, d[1]) }, 1, 1, false},
		{"seed pass waits past what it produced", func(r *Registry) { r.StartPass(id); r.Produced(id, 0, d[0]) }, 1, -2, false},
		{"complete task", func(r *Registry) { r.Complete(id, layer.BlockTable{BlockSize: 4096, Size: 8000, Digests: d}, nil) }, 0, 2, true},
		{"complete task past its end", func(r *Registry) { r.Complete(id, layer.BlockTable{BlockSize: 4096, Size: 8000, Digests: d}, nil) }, 2, 0, true},
		{"abandoned pass", func(r *Registry) { r.StartPass(id); r.Produced(id, 0, d[0]); r.Abandon(id) }, 0, -1, false},
		{"origin of a blob vouches for nothing", func(r *Registry) {
			r.OnDemand(id, 2, blockcache.FillerFunc(func(context.Context, layer.BlockKey, []byte) (int, error) { return 0, errors.New("unused") }))
		}, 0, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRegistry(t)
			tc.setup(r)
			part, err := r.Table(shortCtx(t), id, tc.from)
			switch {
			case tc.want == -1:
				if !errors.Is(err, peer.ErrNotHeld) {
					t.Fatalf("got %+v, %v; want ErrNotHeld", part, err)
				}
			case tc.want == -2:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("got %+v, %v; want it to wait until the deadline", part, err)
				}
			default:
				if err != nil || len(part.Digests) != tc.want || part.Complete != tc.complete || part.From != tc.from {
					t.Fatalf("got %+v, %v; want %d digests from %d, complete %v", part, err, tc.want, tc.from, tc.complete)
				}
			}
		})
	}
}

func TestBlockWaitsForALandingBlock(t *testing.T) {
	r, c := newRegistry(t)
	if _, err := r.Block(shortCtx(t), id, 0); !errors.Is(err, peer.ErrNotHeld) {
		t.Fatalf("unknown task: %v, want ErrNotHeld", err)
	}
	r.Expect(id)
	key := layer.BlockKey{Task: id, Index: 3}
	got := make(chan error, 1)
	go func() {
		b, err := r.Block(t.Context(), id, 3)
		if err == nil {
			if string(b.Bytes()) != "block 3" {
				err = errors.New("wrong bytes")
			}
			b.Release()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	w, err := c.Begin(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	r.Landed(id, 3) // before the commit, as a fetcher does
	w.Commit(copy(w.Buffer(), "block 3"))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// Evicted and nothing to refill from: no longer held.
	c.Remove(key)
	if _, err := r.Block(shortCtx(t), id, 3); !errors.Is(err, peer.ErrNotHeld) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("evicted block: %v", err)
	}
}

func TestBlockNotArriving(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(*Registry, *blockcache.Cache)
		wantWait bool // waits until the caller's deadline rather than answering NotHeld soon
	}{
		{"a peer that has not begun the block answers soon", func(r *Registry, _ *blockcache.Cache) { r.Expect(id); r.Landed(id, 3) }, false},
		{"a peer whose request for the block is out waits for it", func(r *Registry, _ *blockcache.Cache) { r.Expect(id); r.Arriving(id, 5, true) }, true},
		{"a peer whose request ended without the block answers soon", func(r *Registry, _ *blockcache.Cache) {
			r.Expect(id)
			r.Arriving(id, 5, true)
			r.Arriving(id, 5, false)
		}, false},
		{"a peer that has queued the block waits for its request to go out", func(r *Registry, c *blockcache.Cache) {
			r.Expect(id)
			if _, err := c.Begin(context.Background(), layer.BlockKey{Task: id, Index: 5}); err != nil {
				panic(err)
			}
		}, true},
		{"a seed pass waits for the block it will produce", func(r *Registry, _ *blockcache.Cache) { r.StartPass(id) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c := newRegistry(t)
			tc.setup(r, c)
			ctx, cancel := context.WithTimeout(t.Context(), 3*notYetWait)
			defer cancel()
			start := time.Now()
			_, err := r.Block(ctx, id, 5)
			took := time.Since(start)
			switch {
			case tc.wantWait && !errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("got %v after %v; want a wait until the deadline", err, took)
			case !tc.wantWait && (!errors.Is(err, peer.ErrNotHeld) || took > 2*notYetWait):
				t.Fatalf("got %v after %v; want ErrNotHeld after about %v", err, took, notYetWait)
			}
		})
	}
}

func TestSeedServesFewCopies(t *testing.T) {
	r, c := newRegistry(t)
	now := time.Unix(1e9, 0)
	r.now = func() time.Time { return now }
	r.StartPass(id)
	key := layer.BlockKey{Task: id, Index: 0}
	w, err := c.Begin(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	w.Commit(copy(w.Buffer(), "block 0"))
	d := layer.DigestBlock([]byte("block 0"))
	if err := r.Produced(id, 0, d); err != nil {
		t.Fatal(err)
	}
	serve := func(when string, wantBusy bool) {
		t.Helper()
		b, err := r.Block(shortCtx(t), id, 0)
		if wantBusy {
			if !errors.Is(err, peer.ErrBusy) {
				t.Fatalf("%s: %v; want ErrBusy", when, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		b.Release()
	}
	for i := range sourceCopies {
		serve(fmt.Sprintf("copy %d while the pass runs", i+1), false)
	}
	serve("one copy more", true)
	now = now.Add(copiesWindow)
	serve("a copy once the window passed", false)
	serve("another", false)
	serve("one copy more", true)
	r.Complete(id, layer.BlockTable{BlockSize: 4096, Size: 7, Digests: []layer.BlockDigest{d}}, nil)
	serve("one copy more after the pass", false)
}

// TestOnDemandOrigin: the origin of a blob read at random holds every block, reads each from
// its fill the first time a peer asks, then serves it from the cache; it has no block past
// the blob's end.
func TestOnDemandOrigin(t *testing.T) {
	r, _ := newRegistry(t)
	var fills []int
	r.OnDemand(id, 3, blockcache.FillerFunc(func(_ context.Context, key layer.BlockKey, buf []byte) (int, error) {
		fills = append(fills, key.Index)
		return copy(buf, fmt.Sprintf("block %d", key.Index)), nil
	}))
	bits, err := r.Held(id)
	if err != nil || len(bits) != 1 || bits[0] != 0b111 {
		t.Fatalf("got held %08b, %v; want blocks 0-2", bits, err)
	}
	for _, i := range []int{2, 0, 2} {
		b, err := r.Block(shortCtx(t), id, i)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if got, want := string(b.Bytes()), fmt.Sprintf("block %d", i); got != want {
			t.Errorf("block %d: got %q; want %q", i, got, want)
		}
		b.Release()
	}
	if fmt.Sprint(fills) != "[2 0]" {
		t.Errorf("filled blocks %v; want [2 0], each once", fills)
	}
	if _, err := r.Block(shortCtx(t), id, 3); !errors.Is(err, peer.ErrNotHeld) {
		t.Errorf("block past the end: got %v; want ErrNotHeld", err)
	}
}

package peer

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

const task = layer.TaskID("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

// gateHolder serves "block <i>" for every block once gate is closed, and its digests.
type gateHolder struct {
	cache *blockcache.Cache
	gate  chan struct{}
}

func (h *gateHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	if i >= 100 {
		return nil, ErrNotHeld
	}
	select {
	case <-h.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.cache.Get(ctx, layer.BlockKey{Task: id, Index: i}, blockcache.FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		return copy(buf, []byte{byte(k.Index), 1, 2, 3}), nil
	}))
}

func (h *gateHolder) Table(_ context.Context, _ layer.TaskID, from int) (wire.TablePart, error) {
	return wire.TablePart{Total: 100, From: from, Digests: make([]layer.BlockDigest, 100-from)}, nil
}

func (h *gateHolder) Index(context.Context, layer.TaskID) ([]byte, error) {
	return []byte("index"), nil
}

func serve(t *testing.T, h Holder, opts ...ServerOption) (*Server, string) {
	t.Helper()
	s := NewServer(h, opts...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), ln)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

func newHolder(t *testing.T) *gateHolder {
	c, err := blockcache.New(1<<20, blockcache.WithBlockSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &gateHolder{cache: c, gate: make(chan struct{})}
}

func TestBlockTableAndErrors(t *testing.T) {
	h := newHolder(t)
	close(h.gate)
	_, addr := serve(t, h)
	c := NewClient()
	defer c.Close()
	buf := make([]byte, 4096)
	for i := range 3 { // the second and third reuse the pooled connection
		n, st, err := c.Block(t.Context(), addr, task, 7, time.Second, buf)
		if err != nil || !bytes.Equal(buf[:n], []byte{7, 1, 2, 3}) {
			t.Fatalf("request %d: %v, %x", i, err, buf[:n])
		}
		if st.FreeSlots != DefaultSlots-1 {
			t.Errorf("free slots %d while serving one, want %d", st.FreeSlots, DefaultSlots-1)
		}
	}
	if _, _, err := c.Block(t.Context(), addr, task, 100, time.Second, buf); !errors.Is(err, ErrNotFound) {
		t.Errorf("block not held: got %v, want ErrNotFound", err)
	}
	if _, _, err := c.Block(t.Context(), addr, task, 1, time.Second, buf[:2]); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("block larger than the buffer: got %v, want ErrMalformed", err)
	}
	part, _, err := c.Table(t.Context(), addr, task, 40, time.Second)
	if err != nil || part.From != 40 || len(part.Digests) != 60 {
		t.Errorf("table: %+v, %v", part, err)
	}
	if x, _, err := c.Index(t.Context(), addr, task, time.Second); err != nil || string(x) != "index" {
		t.Errorf("index: %q, %v", x, err)
	}
	if _, _, err := c.Block(t.Context(), "127.0.0.1:1", task, 1, time.Second, buf); err == nil {
		t.Error("no error from a peer that does not listen")
	}
}

// bigHolder serves blocks of 16 MiB, more than the sockets between a server and a client
// that does not read can buffer, so that sending one holds its upload slot.
type bigHolder struct{ cache *blockcache.Cache }

func (h *bigHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	return h.cache.Get(ctx, layer.BlockKey{Task: id, Index: i}, blockcache.FillerFunc(func(_ context.Context, _ layer.BlockKey, buf []byte) (int, error) {
		return len(buf), nil
	}))
}

func (h *bigHolder) Table(context.Context, layer.TaskID, int) (wire.TablePart, error) {
	return wire.TablePart{}, ErrNotHeld
}

func (h *bigHolder) Index(context.Context, layer.TaskID) ([]byte, error) { return nil, ErrNotHeld }

func TestBusyWhenEverySlotIsSending(t *testing.T) {
	c, err := blockcache.New(64<<20, blockcache.WithBlockSize(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, addr := serve(t, &bigHolder{cache: c}, WithSlots(1))
	// A client that asks for a block and does not read it: the server's send blocks.
	stuck, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuck.(*net.TCPConn).SetReadBuffer(4096)
	if err := wire.WriteRequest(stuck, wire.Request{Op: wire.OpBlock, Task: task, Index: 1, Wait: time.Second}); err != nil {
		t.Fatal(err)
	}
	client := NewClient()
	defer client.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, st, err := client.Block(t.Context(), addr, task, 2, time.Second, make([]byte, 16<<20))
		if errors.Is(err, ErrBusy) && st.FreeSlots == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("while the only slot sends: %v, state %+v; want ErrBusy with no free slot", err, st)
		}
		time.Sleep(20 * time.Millisecond) // the stuck send may not have begun yet
	}
}

func TestWaitingHoldsNoSlot(t *testing.T) {
	h := newHolder(t)
	_, addr := serve(t, h, WithSlots(1))
	c := NewClient()
	defer c.Close()
	waiting := make(chan error, 1)
	go func() {
		_, _, err := c.Block(t.Context(), addr, task, 1, 10*time.Second, make([]byte, 4096))
		waiting <- err
	}()
	time.Sleep(50 * time.Millisecond) // the first request waits for its block
	// A block that is not held is answered at once, not "busy": the wait holds no slot.
	_, st, err := c.Block(t.Context(), addr, task, 100, time.Second, make([]byte, 4096))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("second request: %v, state %+v; want ErrNotFound, not busy", err, st)
	}
	close(h.gate)
	if err := <-waiting; err != nil {
		t.Fatalf("the waiting request: %v", err)
	}
}

func TestWaitIsBoundedByTheClient(t *testing.T) {
	h := newHolder(t) // the gate never opens
	_, addr := serve(t, h)
	start := time.Now()
	_, _, err := NewClient().Block(t.Context(), addr, task, 1, 100*time.Millisecond, make([]byte, 4096))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound after the wait", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s for a 100 ms wait", took)
	}
}

func TestMalformedRequestGetsBadRequest(t *testing.T) {
	_, addr := serve(t, newHolder(t))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	h, err := wire.ReadResponseHeader(conn)
	if err != nil || h.Status != wire.StatusBadRequest {
		t.Fatalf("got %+v, %v; want a bad-request answer", h, err)
	}
}

func TestRateMeter(t *testing.T) {
	now := time.Unix(0, 0)
	m := NewRateMeter(func() time.Time { return now })
	for range 10 {
		m.Add(1 << 20)
		now = now.Add(100 * time.Millisecond)
	}
	if got := m.Rate(); got < 9<<20 || got > 11<<20 {
		t.Errorf("10 MiB/s measured as %d B/s", got)
	}
	now = now.Add(10 * time.Second) // idle
	if got := m.Rate(); got > 1<<20 {
		t.Errorf("after 10 s idle the rate is still %d B/s", got)
	}
	if m.Total() != 10<<20 {
		t.Errorf("total %d", m.Total())
	}
}

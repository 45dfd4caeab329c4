package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

// Errors a Client returns for a peer's answers.
var (
	// ErrBusy: the peer had no free upload slot.
	ErrBusy = errors.New("peer busy")
	// ErrNotFound: the peer does not hold it, or did not get it within the wait.
	ErrNotFound = errors.New("peer does not hold it")
	// ErrForbidden: the task is private and the peer does not know this node may read it.
	ErrForbidden = errors.New("peer refused a private task")
	// ErrPeer: the peer failed or refused the request.
	ErrPeer = errors.New("peer error")
)

// maxIdlePerPeer bounds the idle connections kept per peer.
const maxIdlePerPeer = 16

// dialTimeout bounds connecting to a peer.
const dialTimeout = 5 * time.Second

// Client asks peers for blocks and digests. It is safe for concurrent use.
type Client struct {
	dialer net.Dialer
	tls    *tls.Config // nil: plain TCP
	meter  *RateMeter  // bytes received

	mu     sync.Mutex
	idle   map[string][]*conn
	closed bool
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithClientTLS has the client speak TLS with cfg to every peer (package tlsfiles makes a
// mutual-TLS one); peers must serve TLS too (a tls.NewListener under Server.Serve).
func WithClientTLS(cfg *tls.Config) ClientOption { return func(c *Client) { c.tls = cfg } }

// NewClient returns a client.
func NewClient(opts ...ClientOption) *Client {
	c := &Client{dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}, meter: NewRateMeter(time.Now), idle: make(map[string][]*conn)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// DownloadRate is the rate at which this client has been receiving, in bytes/s.
func (c *Client) DownloadRate() int64 { return c.meter.Rate() }

// DownloadedBytes is every payload byte this client has received.
func (c *Client) DownloadedBytes() int64 { return c.meter.Total() }

// Close closes the idle connections; connections in use close when their request ends.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for addr, cs := range c.idle {
		for _, cn := range cs {
			cn.Close()
		}
		delete(c.idle, addr)
	}
	return nil
}

// Block asks the peer at addr for block index of task, allowing it to wait up to wait for a
// block it is still receiving, and reads it into buf, which must be large enough for the
// block. It returns the block's length and the peer's state. The bytes are not verified.
func (c *Client) Block(ctx context.Context, addr string, task layer.TaskID, index int, wait time.Duration, buf []byte) (int, wire.State, error) {
	n, st, _, err := c.BlockTimed(ctx, addr, task, index, wait, buf)
	return n, st, err
}

// BlockTimed is Block that also returns how long the block's bytes took to arrive once the
// peer began to send them: the transfer, without the time the peer waited for a block it
// was still receiving itself.
func (c *Client) BlockTimed(ctx context.Context, addr string, task layer.TaskID, index int, wait time.Duration, buf []byte) (int, wire.State, time.Duration, error) {
	var (
		n        int
		transfer time.Duration
	)
	st, err := c.do(ctx, addr, wire.Request{Op: wire.OpBlock, Task: task, Index: index, Wait: wait}, func(h wire.ResponseHeader, r io.Reader) error {
		if h.Length > len(buf) {
			return fmt.Errorf("block of %d bytes, want at most %d: %w", h.Length, len(buf), wire.ErrMalformed)
		}
		n = h.Length
		start := time.Now()
		_, err := io.ReadFull(r, buf[:n])
		transfer = time.Since(start)
		return err
	})
	if err != nil {
		return 0, st, 0, fmt.Errorf("peer %s: block %d of %s: %w", addr, index, task, err)
	}
	return n, st, transfer, nil
}

// Table asks the peer at addr for the digests of task's blocks from index from on.
func (c *Client) Table(ctx context.Context, addr string, task layer.TaskID, from int, wait time.Duration) (wire.TablePart, wire.State, error) {
	var part wire.TablePart
	st, err := c.do(ctx, addr, wire.Request{Op: wire.OpTable, Task: task, Index: from, Wait: wait}, func(h wire.ResponseHeader, r io.Reader) error {
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		var err error
		part, err = wire.ParseTablePart(b)
		if err == nil && part.From != from {
			err = fmt.Errorf("digests from %d, asked from %d: %w", part.From, from, wire.ErrMalformed)
		}
		return err
	})
	if err != nil {
		return wire.TablePart{}, st, fmt.Errorf("peer %s: digests of %s from %d: %w", addr, task, from, err)
	}
	return part, st, nil
}

// Index asks the peer at addr for task's encoded layer index, allowing it to wait up to wait
// for one it is still producing. The caller decodes and checks it.
func (c *Client) Index(ctx context.Context, addr string, task layer.TaskID, wait time.Duration) ([]byte, wire.State, error) {
	var x []byte
	st, err := c.do(ctx, addr, wire.Request{Op: wire.OpIndex, Task: task, Wait: wait}, func(h wire.ResponseHeader, r io.Reader) error {
		x = make([]byte, h.Length)
		_, err := io.ReadFull(r, x)
		return err
	})
	if err != nil {
		return nil, st, fmt.Errorf("peer %s: index of %s: %w", addr, task, err)
	}
	return x, st, nil
}

// Held asks the peer at addr which of task's blocks it holds: a bitmap, bit i%8 of byte i/8
// for block i (wire.OpHeld).
func (c *Client) Held(ctx context.Context, addr string, task layer.TaskID) ([]byte, wire.State, error) {
	var bits []byte
	st, err := c.do(ctx, addr, wire.Request{Op: wire.OpHeld, Task: task}, func(h wire.ResponseHeader, r io.Reader) error {
		bits = make([]byte, h.Length)
		_, err := io.ReadFull(r, bits)
		return err
	})
	if err != nil {
		return nil, st, fmt.Errorf("peer %s: blocks held of %s: %w", addr, task, err)
	}
	return bits, st, nil
}

// do sends req on a pooled connection and hands an OK answer's payload to read. The
// connection goes back to the pool only after a whole, well-formed exchange.
func (c *Client) do(ctx context.Context, addr string, req wire.Request, read func(wire.ResponseHeader, io.Reader) error) (wire.State, error) {
	cn, err := c.get(ctx, addr)
	if err != nil {
		return wire.State{}, err
	}
	// The connection is closed if ctx ends mid-exchange: that unblocks reads and writes.
	stop := context.AfterFunc(ctx, func() { cn.Close() })
	st, err := exchange(cn, c.meter, req, read)
	if !stop() {
		cn.Close()
		if err == nil || ctx.Err() != nil {
			err = ctx.Err()
		}
		return st, err
	}
	if err != nil && !errors.Is(err, ErrBusy) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrPeer) {
		cn.Close()
		return st, err
	}
	c.put(addr, cn)
	return st, err
}

func exchange(cn *conn, meter *RateMeter, req wire.Request, read func(wire.ResponseHeader, io.Reader) error) (wire.State, error) {
	// The peer may wait req.Wait before it answers; allow for the transfer on top.
	cn.SetDeadline(time.Now().Add(req.Wait + ioTimeout))
	if err := wire.WriteRequest(cn, req); err != nil {
		return wire.State{}, err
	}
	h, err := wire.ReadResponseHeader(cn.r)
	if err != nil {
		return wire.State{}, err
	}
	if h.Status != wire.StatusOK {
		msg := make([]byte, min(h.Length, 4096))
		if _, err := io.ReadFull(cn.r, msg); err != nil {
			return h.State, err
		}
		if _, err := io.CopyN(io.Discard, cn.r, int64(h.Length-len(msg))); err != nil {
			return h.State, err
		}
		switch h.Status {
		case wire.StatusBusy:
			return h.State, ErrBusy
		case wire.StatusNotFound:
			return h.State, fmt.Errorf("%w: %s", ErrNotFound, msg)
		case wire.StatusForbidden:
			return h.State, fmt.Errorf("%w: %s", ErrForbidden, msg)
		}
		return h.State, fmt.Errorf("%w: %s: %s", ErrPeer, h.Status, msg)
	}
	if err := read(h, io.LimitReader(cn.r, int64(h.Length))); err != nil {
		return h.State, err
	}
	meter.Add(int64(h.Length))
	return h.State, nil
}

func (c *Client) get(ctx context.Context, addr string) (*conn, error) {
	c.mu.Lock()
	if cs := c.idle[addr]; len(cs) > 0 {
		cn := cs[len(cs)-1]
		c.idle[addr] = cs[:len(cs)-1]
		c.mu.Unlock()
		return cn, nil
	}
	c.mu.Unlock()
	nc, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS with %s: %w", addr, err)
		}
		nc = tc
	}
	return &conn{Conn: nc, r: bufio.NewReaderSize(nc, 64<<10)}, nil
}

func (c *Client) put(addr string, cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[addr]) >= maxIdlePerPeer {
		cn.Close()
		return
	}
	c.idle[addr] = append(c.idle[addr], cn)
}

// Forget closes the idle connections to addr, e.g. after it failed.
func (c *Client) Forget(addr string) {
	c.mu.Lock()
	cs := c.idle[addr]
	delete(c.idle, addr)
	c.mu.Unlock()
	for _, cn := range cs {
		cn.Close()
	}
}

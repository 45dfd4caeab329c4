package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

// ErrNotHeld is returned by a Holder for a task or block this node neither holds nor is
// receiving.
var ErrNotHeld = errors.New("not held by this peer")

// Holder is what a Server serves.
type Holder interface {
	// Block returns block index of task, pinned (the caller releases it). For a block this
	// node is still receiving it waits until the block lands or ctx ends. It returns an
	// error wrapping ErrNotHeld for what the node will not have, and one wrapping ErrBusy
	// for what it will not serve now.
	Block(ctx context.Context, task layer.TaskID, index int) (*blockcache.Block, error)
	// Table returns the digests of task's blocks from index from on that this node can vouch
	// for. When it has none past from yet but expects some, it waits until ctx ends.
	Table(ctx context.Context, task layer.TaskID, from int) (wire.TablePart, error)
	// Index returns task's encoded layer index, if this node can vouch for it, waiting
	// until ctx ends for one its seed pass is still producing.
	Index(ctx context.Context, task layer.TaskID) ([]byte, error)
}

// HeldReporter is a Holder that can also say which blocks of a task it holds; a Server of a
// Holder that is not one answers "not found" to wire.OpHeld.
type HeldReporter interface {
	// Held returns a bitmap of the blocks of task held now: bit i%8 of byte i/8 for block i.
	// It returns an error wrapping ErrNotHeld for a task this node does not know.
	Held(task layer.TaskID) ([]byte, error)
}

// Gate decides which peers may read which tasks.
type Gate interface {
	// Admit returns nil if the peer whose verified certificate names identity ("" for a
	// peer without one, or a server without TLS) may read task, and otherwise an error:
	// wrapping ErrNotHeld to have the peer told the task is not held here (it asks again,
	// or elsewhere), any other to have it told it is refused (ErrForbidden). It is called
	// for every request, so it keeps its answers.
	Admit(ctx context.Context, identity string, task layer.TaskID) error
}

// WithGate has the server ask g before it answers any request about a task.
func WithGate(g Gate) ServerOption { return func(s *Server) { s.gate = g } }

// DefaultSlots is the default number of answers a server sends at once.
const DefaultSlots = 16

// slotWait bounds how long an answer that is ready waits for an upload slot.
const slotWait = time.Second

// maxWait bounds how long a server waits for a block it is receiving, whatever the client asks.
const maxWait = time.Minute

// ioTimeout bounds reading a request and writing a response.
const ioTimeout = time.Minute

// Server serves a Holder's blocks. It is safe for concurrent use.
type Server struct {
	holder Holder
	gate   Gate // nil: every peer may read every task
	slots  chan struct{}
	meter  *RateMeter

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context // cancelled by Close: every wait ends
	stop   context.CancelFunc
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithSlots sets how many answers are sent at once (default DefaultSlots).
func WithSlots(n int) ServerOption {
	return func(s *Server) { s.slots = make(chan struct{}, max(n, 1)) }
}

// NewServer returns a server of h's blocks.
func NewServer(h Holder, opts ...ServerOption) *Server {
	s := &Server{holder: h, slots: make(chan struct{}, DefaultSlots), meter: NewRateMeter(time.Now), conns: make(map[net.Conn]struct{})}
	s.ctx, s.stop = context.WithCancel(context.Background())
	for _, o := range opts {
		o(s)
	}
	return s
}

// State is the server's live state, as it reports it.
func (s *Server) State() wire.State {
	free := cap(s.slots) - len(s.slots)
	return wire.State{FreeSlots: free, UploadRate: s.meter.Rate(), Load: 1 - float64(free)/float64(cap(s.slots))}
}

// UploadedBytes is how many block and digest bytes the server has sent.
func (s *Server) UploadedBytes() int64 { return s.meter.Total() }

// Serve accepts peers on ln until Close. It returns nil after Close.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	go func() {
		select {
		case <-s.ctx.Done():
		case <-ctx.Done():
		}
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("peer server: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(log.WithLogger(ctx, log.G(ctx).WithField("peer", c.RemoteAddr().String())), c)
	}
}

// Close stops serving, ends every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	return nil
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	w := &meteredWriter{w: c, meter: s.meter}
	identity := ""
	for {
		c.SetReadDeadline(time.Time{}) // an idle pooled connection may wait for its next request
		req, err := wire.ReadRequest(r)
		if err != nil {
			if errors.Is(err, wire.ErrMalformed) {
				c.SetWriteDeadline(time.Now().Add(ioTimeout))
				wire.WriteResponse(c, wire.ResponseHeader{Status: wire.StatusBadRequest, State: s.State()}, []byte(err.Error()))
			}
			return
		}
		if tc, ok := c.(*tls.Conn); ok && identity == "" {
			identity = verifiedName(tc.ConnectionState()) // the handshake is done: a request was read
		}
		if err := s.handle(ctx, c, w, req, identity); err != nil {
			log.G(ctx).WithError(err).Debug("peer server: connection ends")
			return
		}
	}
}

// handle answers one request; an error means the connection cannot go on.
//
// Upload slots bound what is being sent, not what is waiting: a request for a block this
// node is still receiving holds no slot while it waits, so a parent that pipelines many
// children's requests still answers "busy" only when its uplink is really shared out. A
// request that finds every slot sending is answered busy at once, so the child asks another
// parent; one that waited and then finds none waits up to slotWait for one.
func (s *Server) handle(ctx context.Context, c net.Conn, w *meteredWriter, req wire.Request, identity string) error {
	if s.gate != nil {
		if err := s.gate.Admit(ctx, identity, req.Task); err != nil {
			if !errors.Is(err, ErrNotHeld) {
				err = fmt.Errorf("%w: %w", ErrForbidden, err)
			}
			status, msg := errorStatus(err)
			log.G(ctx).WithError(err).WithFields(log.Fields{"task": req.Task, "identity": identity, "status": status}).Debug("the gate turned a request away")
			c.SetWriteDeadline(time.Now().Add(ioTimeout))
			return wire.WriteResponse(c, wire.ResponseHeader{Status: status, State: s.State(), Length: len(msg)}, msg)
		}
	}
	if len(s.slots) == cap(s.slots) {
		return s.busy(c)
	}
	wctx, cancel := context.WithTimeout(s.ctx, min(req.Wait, maxWait))
	defer cancel()
	stopOnClose := context.AfterFunc(ctx, cancel)
	defer stopOnClose()

	var (
		status  = wire.StatusOK
		payload []byte
		release func()
	)
	switch req.Op {
	case wire.OpBlock:
		b, err := s.holder.Block(wctx, req.Task, req.Index)
		if err != nil {
			status, payload = errorStatus(err)
			break
		}
		payload, release = b.Bytes(), b.Release
	case wire.OpTable:
		part, err := s.holder.Table(wctx, req.Task, req.Index)
		if err != nil {
			status, payload = errorStatus(err)
			break
		}
		if len(part.Digests) > wire.MaxTableDigests {
			part.Digests = part.Digests[:wire.MaxTableDigests]
		}
		payload = wire.AppendTablePart(nil, part)
	case wire.OpIndex:
		x, err := s.holder.Index(wctx, req.Task)
		if err != nil {
			status, payload = errorStatus(err)
			break
		}
		payload = x
	case wire.OpHeld:
		hr, ok := s.holder.(HeldReporter)
		if !ok {
			status, payload = wire.StatusNotFound, []byte("this peer does not report the blocks it holds")
			break
		}
		bits, err := hr.Held(req.Task)
		if err != nil {
			status, payload = errorStatus(err)
			break
		}
		payload = bits
	}
	if release != nil {
		defer release()
	}
	slot := time.NewTimer(slotWait)
	defer slot.Stop()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-slot.C:
		return s.busy(c)
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	return wire.WriteResponse(w, wire.ResponseHeader{Status: status, State: s.State(), Length: len(payload)}, payload)
}

// verifiedName is the common name of the client certificate a TLS handshake verified, or "".
func verifiedName(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return cs.VerifiedChains[0][0].Subject.CommonName
}

// busy answers that every upload slot is sending.
func (s *Server) busy(c net.Conn) error {
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	return wire.WriteResponse(c, wire.ResponseHeader{Status: wire.StatusBusy, State: s.State()}, nil)
}

func errorStatus(err error) (wire.Status, []byte) {
	switch {
	case errors.Is(err, ErrBusy):
		return wire.StatusBusy, []byte(err.Error())
	case errors.Is(err, ErrNotHeld), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return wire.StatusNotFound, []byte(err.Error())
	case errors.Is(err, ErrForbidden):
		return wire.StatusForbidden, []byte(err.Error())
	}
	return wire.StatusError, []byte(err.Error())
}

// meteredWriter counts the bytes a server sends.
type meteredWriter struct {
	w     net.Conn
	meter *RateMeter
}

func (m *meteredWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	m.meter.Add(int64(n))
	return n, err
}

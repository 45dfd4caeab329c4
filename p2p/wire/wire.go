package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// Magic starts every request.
const Magic = "P2PB"

// Version is the protocol version this package speaks.
const Version = 1

// MaxPayload bounds a response payload: the largest block, or a table part.
const MaxPayload = layer.MaxBlockSize

// maxTaskID bounds a task id ("sha256:" and 64 hex digits, with room for other algorithms).
const maxTaskID = 256

// Op is what a request asks for.
type Op uint8

const (
	// OpBlock asks for one block.
	OpBlock Op = 1
	// OpTable asks for the block digests from an index on.
	OpTable Op = 2
	// OpIndex asks for the task's layer index (layer.Index, encoded); Index is ignored.
	OpIndex Op = 3
	// OpHeld asks which of the task's blocks the peer holds, now: the answer is a bitmap,
	// bit i%8 (least significant first) of byte i/8 set for block i; Index and Wait are
	// ignored.
	OpHeld Op = 4
)

// Status is the outcome of a request.
type Status uint8

const (
	StatusOK Status = iota
	// StatusBusy: no free upload slot; ask another parent.
	StatusBusy
	// StatusNotFound: the server does not hold it (or not within the wait).
	StatusNotFound
	// StatusBadRequest: the request was malformed.
	StatusBadRequest
	// StatusError: the server failed; the payload says why.
	StatusError
	// StatusForbidden: the task is a private repository's layer, and the requester did not
	// prove it may read that repository (or presented no certificate).
	StatusForbidden
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBusy:
		return "busy"
	case StatusNotFound:
		return "not found"
	case StatusBadRequest:
		return "bad request"
	case StatusError:
		return "error"
	case StatusForbidden:
		return "forbidden"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// Request asks a peer for a block or for digests.
type Request struct {
	Op    Op
	Task  layer.TaskID
	Index int
	// Wait is how long the server may wait for what it is still receiving.
	Wait time.Duration
}

// State is a server's live state, sent with every response.
type State struct {
	FreeSlots  int
	UploadRate int64   // bytes/s
	Load       float64 // in [0, 1]
}

// ResponseHeader precedes a response's payload.
type ResponseHeader struct {
	Status Status
	State  State
	Length int // payload bytes that follow
}

const requestFixed = 4 + 1 + 1 + 2 + 4 + 4 // without the task id
const responseHeaderSize = 1 + 2 + 8 + 2 + 4

// WriteRequest writes r to w.
func WriteRequest(w io.Writer, r Request) error {
	if len(r.Task) == 0 || len(r.Task) > maxTaskID {
		return fmt.Errorf("write request: task id of %d bytes", len(r.Task))
	}
	if r.Index < 0 || int64(r.Index) > int64(^uint32(0)) {
		return fmt.Errorf("write request: index %d out of range", r.Index)
	}
	b := make([]byte, 0, requestFixed+len(r.Task))
	b = append(b, Magic...)
	b = append(b, Version, byte(r.Op))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Task)))
	b = append(b, r.Task...)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Index))
	b = binary.BigEndian.AppendUint32(b, uint32(min(max(r.Wait.Milliseconds(), 0), int64(^uint32(0)))))
	_, err := w.Write(b)
	return err
}

// ErrMalformed is wrapped by errors for input that breaks the protocol.
var ErrMalformed = errors.New("malformed peer protocol message")

// ReadRequest reads one request. It returns io.EOF if the connection ended cleanly before it.
func ReadRequest(r *bufio.Reader) (Request, error) {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Request{}, fmt.Errorf("read request: %w", err)
		}
		return Request{}, err
	}
	if string(head[:4]) != Magic {
		return Request{}, fmt.Errorf("read request: bad magic %q: %w", head[:4], ErrMalformed)
	}
	if head[4] != Version {
		return Request{}, fmt.Errorf("read request: version %d, want %d: %w", head[4], Version, ErrMalformed)
	}
	op := Op(head[5])
	if op < OpBlock || op > OpHeld {
		return Request{}, fmt.Errorf("read request: unknown op %d: %w", op, ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(head[6:]))
	if n == 0 || n > maxTaskID {
		return Request{}, fmt.Errorf("read request: task id of %d bytes: %w", n, ErrMalformed)
	}
	rest := make([]byte, n+8)
	if _, err := io.ReadFull(r, rest); err != nil {
		return Request{}, fmt.Errorf("read request: %w", noEOF(err))
	}
	task := layer.TaskID(rest[:n])
	if err := task.Validate(); err != nil {
		return Request{}, fmt.Errorf("read request: %w: %w", err, ErrMalformed)
	}
	return Request{
		Op:    op,
		Task:  task,
		Index: int(binary.BigEndian.Uint32(rest[n:])),
		Wait:  time.Duration(binary.BigEndian.Uint32(rest[n+4:])) * time.Millisecond,
	}, nil
}

// WriteResponse writes a response header and its payload.
func WriteResponse(w io.Writer, h ResponseHeader, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("write response: payload of %d bytes", len(payload))
	}
	var b [responseHeaderSize]byte
	b[0] = byte(h.Status)
	binary.BigEndian.PutUint16(b[1:], uint16(min(max(h.State.FreeSlots, 0), 1<<16-1)))
	binary.BigEndian.PutUint64(b[3:], uint64(max(h.State.UploadRate, 0)))
	binary.BigEndian.PutUint16(b[11:], uint16(min(max(h.State.Load, 0), 1)*1000))
	binary.BigEndian.PutUint32(b[13:], uint32(len(payload)))
	if _, err := w.Write(b[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ReadResponseHeader reads a response header; the caller then reads Length payload bytes.
func ReadResponseHeader(r io.Reader) (ResponseHeader, error) {
	var b [responseHeaderSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ResponseHeader{}, fmt.Errorf("read response: %w", noEOF(err))
	}
	h := ResponseHeader{
		Status: Status(b[0]),
		State: State{
			FreeSlots:  int(binary.BigEndian.Uint16(b[1:])),
			UploadRate: int64(min(binary.BigEndian.Uint64(b[3:]), 1<<62)),
			Load:       float64(min(binary.BigEndian.Uint16(b[11:]), 1000)) / 1000,
		},
		Length: int(binary.BigEndian.Uint32(b[13:])),
	}
	if h.Status > StatusForbidden {
		return ResponseHeader{}, fmt.Errorf("read response: unknown status %d: %w", b[0], ErrMalformed)
	}
	if h.Length > MaxPayload {
		return ResponseHeader{}, fmt.Errorf("read response: payload of %d bytes: %w", h.Length, ErrMalformed)
	}
	return h, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// TablePart is a run of block digests of a task.
type TablePart struct {
	// Total is the task's block count, or 0 while the source does not know it yet.
	Total int
	// Complete says the source holds every digest of the task, verified against the task's
	// digest.
	Complete bool
	From     int
	Digests  []layer.BlockDigest
}

const tablePartFixed = 4 + 1 + 4 + 4

// MaxTableDigests bounds the digests in one table part.
const MaxTableDigests = (MaxPayload - tablePartFixed) / len(layer.BlockDigest{})

// AppendTablePart appends the encoding of p to b.
func AppendTablePart(b []byte, p TablePart) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(p.Total))
	c := byte(0)
	if p.Complete {
		c = 1
	}
	b = append(b, c)
	b = binary.BigEndian.AppendUint32(b, uint32(p.From))
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.Digests)))
	for _, d := range p.Digests {
		b = append(b, d[:]...)
	}
	return b
}

// ParseTablePart decodes a table part and checks it is consistent.
func ParseTablePart(b []byte) (TablePart, error) {
	if len(b) < tablePartFixed {
		return TablePart{}, fmt.Errorf("table part of %d bytes: %w", len(b), ErrMalformed)
	}
	p := TablePart{
		Total:    int(binary.BigEndian.Uint32(b)),
		Complete: b[4] == 1,
		From:     int(binary.BigEndian.Uint32(b[5:])),
	}
	if b[4] > 1 {
		return TablePart{}, fmt.Errorf("table part: complete flag %d: %w", b[4], ErrMalformed)
	}
	n := int(binary.BigEndian.Uint32(b[9:]))
	size := len(layer.BlockDigest{})
	if n > MaxTableDigests || len(b)-tablePartFixed != n*size {
		return TablePart{}, fmt.Errorf("table part: %d digests in %d bytes: %w", n, len(b)-tablePartFixed, ErrMalformed)
	}
	if p.Total > 0 && p.From+n > p.Total || p.Complete && p.Total == 0 && (p.From+n) != 0 {
		return TablePart{}, fmt.Errorf("table part: digests %d..%d of %d blocks: %w", p.From, p.From+n, p.Total, ErrMalformed)
	}
	p.Digests = make([]layer.BlockDigest, n)
	for i := range p.Digests {
		copy(p.Digests[i][:], b[tablePartFixed+i*size:])
	}
	return p, nil
}

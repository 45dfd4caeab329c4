package scheduler

import (
	"context"
	"io"
	"sync"
)

// mailbox carries commands from the scheduler, which puts them while holding its lock, to
// the one goroutine that sends them on a stream, outside that lock. It has its own small
// mutex, always taken after Scheduler.mu when both are held, never before; put never blocks.
type mailbox[T any] struct {
	// keepLatest makes put replace a command not yet taken (each command states the whole
	// instructions); otherwise commands queue up to limit.
	keepLatest bool
	limit      int

	mu    sync.Mutex
	items []T
	ended bool
	end   error         // why it ended; nil for a normal end (next returns io.EOF)
	ready chan struct{} // signalled on put and end; capacity 1
}

func newMailbox[T any](keepLatest bool, limit int) *mailbox[T] {
	return &mailbox[T]{keepLatest: keepLatest, limit: limit, ready: make(chan struct{}, 1)}
}

// put adds x. It reports false, and adds nothing, when the mailbox ended or is full.
func (m *mailbox[T]) put(x T) bool {
	m.mu.Lock()
	switch {
	case m.ended:
		m.mu.Unlock()
		return false
	case m.keepLatest:
		m.items = append(m.items[:0], x)
	case len(m.items) >= m.limit:
		m.mu.Unlock()
		return false
	default:
		m.items = append(m.items, x)
	}
	m.mu.Unlock()
	m.signal()
	return true
}

// close ends the mailbox: next returns err (io.EOF if nil) from now on, and what was not
// taken is dropped. Only the first close counts.
func (m *mailbox[T]) close(err error) {
	m.mu.Lock()
	if !m.ended {
		m.ended, m.end, m.items = true, err, nil
	}
	m.mu.Unlock()
	m.signal()
}

func (m *mailbox[T]) signal() {
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// next waits for the oldest command, the end, or ctx.
func (m *mailbox[T]) next(ctx context.Context) (T, error) {
	var zero T
	for {
		m.mu.Lock()
		if m.ended {
			err := m.end
			m.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return zero, err
		}
		if len(m.items) > 0 {
			x := m.items[0]
			m.items[0] = zero
			m.items = m.items[1:]
			m.mu.Unlock()
			return x, nil
		}
		m.mu.Unlock()
		select {
		case <-m.ready:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}

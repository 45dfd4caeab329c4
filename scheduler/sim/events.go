package sim

import (
	"container/heap"
	"time"
)

type eventKind int

const (
	evJoin      eventKind = iota // a new peer of task
	evLeave                      // peer leaves its task (LeaveTask)
	evFail                       // peer gives up, unless finished (PeerFailed)
	evHostDeath                  // host goes silent
	evHostBack                   // host comes back as a new host
	evDegrade                    // host's uploads become slow
)

// event is something due at a simulated time. Events due at the same time run in the order
// they were scheduled.
type event struct {
	at   time.Duration
	seq  int
	kind eventKind
	task *task
	peer *peer
	host *host
}

// events is a min-heap by (at, seq).
type events []*event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// schedule adds e, due at e.at, unless that is past the end of the run.
func (w *world) schedule(e event) {
	if e.at > w.cfg.Duration {
		return
	}
	w.seq++
	e.seq = w.seq
	heap.Push(&w.events, &e)
}

// due pops the next event due by now, or nil.
func (w *world) due() *event {
	if len(w.events) == 0 || w.events[0].at > w.now {
		return nil
	}
	return heap.Pop(&w.events).(*event)
}

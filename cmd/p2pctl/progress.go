package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

// progress shows how far a long transfer is: a bar redrawn in place on a terminal, nothing
// otherwise (the caller prints a summary line when the work is done).
type progress struct {
	w     io.Writer
	label string
	total atomic.Int64
	n     atomic.Int64
	start time.Time
	stop  chan struct{}
	ended chan struct{}
}

func newProgress(w *os.File, label string, total int64) *progress {
	p := &progress{w: w, label: label, start: time.Now(), stop: make(chan struct{}), ended: make(chan struct{})}
	p.total.Store(total)
	if !term.IsTerminal(int(w.Fd())) {
		close(p.ended)
		return p
	}
	go p.run()
	return p
}

// writer returns w counting what is written to it as progress.
func (p *progress) writer(w io.Writer) io.Writer { return &countingWriter{w: w, n: &p.n} }

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// set records how far the work is: done of total bytes.
func (p *progress) set(done, total int64) {
	p.n.Store(done)
	p.total.Store(total)
}

func (p *progress) run() {
	defer close(p.ended)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			fmt.Fprintf(p.w, "\r\033[K")
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *progress) draw() {
	n, total := p.n.Load(), p.total.Load()
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(n)/float64(total))
	}
	const width = 30
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '='
		}
	}
	rate := float64(n) / 1e6 / max(time.Since(p.start).Seconds(), 1e-3)
	eta := "?"
	if rate > 0 && total > 0 {
		eta = (time.Duration(float64(total-n)/1e6/rate) * time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s [%s] %5.1f%% %.1f/%.1f MB %.0f MB/s ETA %s\033[K", p.label, bar, frac*100, float64(n)/1e6, float64(total)/1e6, rate, eta)
}

func (p *progress) done() {
	select {
	case <-p.ended:
	default:
		close(p.stop)
		<-p.ended
	}
}

// discardLogger silences the in-process registry's request log.
func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

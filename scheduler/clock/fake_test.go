package clock

import (
	"testing"
	"time"
)

func TestFakeTicker(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	tk := f.NewTicker(5 * time.Second)
	defer tk.Stop()

	f.Advance(4 * time.Second)
	select {
	case <-tk.C():
		t.Fatal("got a tick before the period; want none")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-tk.C():
		if want := start.Add(5 * time.Second); !got.Equal(want) {
			t.Fatalf("got tick at %v; want %v", got, want)
		}
	default:
		t.Fatal("got no tick at the period; want one")
	}
	// Three periods at once: one tick, the rest dropped.
	f.Advance(15 * time.Second)
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("got a second tick; want dropped ticks")
	default:
	}
	if got, want := f.Now(), start.Add(20*time.Second); !got.Equal(want) {
		t.Fatalf("got now %v; want %v", got, want)
	}
	tk.Stop()
	if got := f.Tickers(); got != 0 {
		t.Fatalf("got %d tickers after Stop; want 0", got)
	}
	f.Advance(time.Hour)
	select {
	case <-tk.C():
		t.Fatal("got a tick after Stop; want none")
	default:
	}
}

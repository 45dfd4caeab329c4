package scheduling

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

func TestRingOwnerFailoverAndCooldown(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	r, err := NewRing(t.Context(), []string{"10.0.0.1:65003", "sched.test:65003"}, 30*time.Second,
		fakeResolver{"sched.test": {"10.0.0.2", "10.0.0.3"}}, clock)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(r.Addrs()); got != 3 {
		t.Fatalf("%d schedulers, want 3 (one literal, two from the name)", got)
	}
	// Every task has an owner, tasks spread over all three, and the order is stable.
	owners := map[string]int{}
	ownerOf := map[string]string{}
	for i := range 3000 {
		key := fmt.Sprintf("sha256:%064x", i)
		order := r.Order(key)
		if len(order) != 3 {
			t.Fatalf("order of %s: %v", key, order)
		}
		if again := r.Order(key); again[0] != order[0] {
			t.Fatalf("owner of %s changed without a failure", key)
		}
		owners[order[0]]++
		ownerOf[key] = order[0]
	}
	for a, n := range owners {
		if n < 600 || n > 1400 {
			t.Errorf("scheduler %s owns %d of 3000 tasks: uneven", a, n)
		}
	}
	// A failed owner is skipped for the cooldown; its tasks go to the next on the ring, the
	// others keep their owner.
	key := "sha256:" + fmt.Sprintf("%064x", 42)
	order := r.Order(key)
	r.Failed(order[0])
	if got := r.Order(key); got[0] != order[1] || len(got) != 2 {
		t.Fatalf("after the owner failed: %v, want %v first", got, order[1])
	}
	for i := range 3000 {
		k := fmt.Sprintf("sha256:%064x", i)
		o := r.Order(k)
		if o[0] == order[0] {
			t.Fatalf("task %s still routed to the failed scheduler", k)
		}
		if ownerOf[k] != order[0] && o[0] != ownerOf[k] {
			t.Fatalf("task %s moved from %s to %s though its owner is alive", k, ownerOf[k], o[0])
		}
	}
	now = now.Add(31 * time.Second)
	if got := r.Order(key); got[0] != order[0] {
		t.Fatalf("after the cooldown: %v, want the owner %s tried again", got, order[0])
	}
}

func TestRingRefusesAnEmptyList(t *testing.T) {
	if _, err := NewRing(t.Context(), nil, time.Second, fakeResolver{}, time.Now); err == nil {
		t.Fatal("no error for an empty scheduler list")
	}
	if _, err := NewRing(t.Context(), []string{"gone.test:1"}, time.Second, fakeResolver{}, time.Now); err == nil {
		t.Fatal("no error when no name resolves")
	}
}

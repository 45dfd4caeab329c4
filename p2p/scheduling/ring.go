package scheduling

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// vnodes is the number of points each scheduler has on the ring, so tasks spread evenly and
// a scheduler's death moves only its own share.
const vnodes = 64

// Resolver looks up the addresses of a host name. net.DefaultResolver satisfies it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Ring routes each task to a scheduler by consistent hashing over the scheduler list, skips
// schedulers that failed within a cooldown, and refreshes the list (resolving names again)
// when every scheduler failed. It is safe for concurrent use; no lock is held across a
// network call.
type Ring struct {
	entries  []string // as configured: host:port, host may be a name
	cooldown time.Duration
	resolver Resolver
	now      func() time.Time

	mu     sync.Mutex
	addrs  []string // resolved scheduler addresses
	points []point  // sorted by hash
	down   map[string]time.Time
}

type point struct {
	hash uint64
	addr string
}

// NewRing returns a ring over entries, each host:port where host may resolve to several
// addresses. It resolves them now.
func NewRing(ctx context.Context, entries []string, cooldown time.Duration, resolver Resolver, now func() time.Time) (*Ring, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("scheduler ring: no scheduler")
	}
	r := &Ring{entries: slices.Clone(entries), cooldown: cooldown, resolver: resolver, now: now, down: make(map[string]time.Time)}
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Refresh resolves the configured entries again and rebuilds the ring. Schedulers still
// cooling down stay skipped.
func (r *Ring) Refresh(ctx context.Context) error {
	var addrs []string
	var lastErr error
	for _, e := range r.entries {
		host, port, err := net.SplitHostPort(e)
		if err != nil {
			return fmt.Errorf("scheduler %q: %w", e, err)
		}
		if net.ParseIP(host) != nil {
			addrs = append(addrs, e)
			continue
		}
		ips, err := r.resolver.LookupHost(ctx, host)
		if err != nil {
			lastErr = fmt.Errorf("resolve scheduler %q: %w", e, err)
			continue
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("no scheduler address")
		}
		return lastErr
	}
	points := make([]point, 0, len(addrs)*vnodes)
	for _, a := range addrs {
		for i := range vnodes {
			points = append(points, point{hash: hash(a + "#" + strconv.Itoa(i)), addr: a})
		}
	}
	sort.Slice(points, func(i, j int) bool { return points[i].hash < points[j].hash })
	r.mu.Lock()
	r.addrs, r.points = addrs, points
	r.mu.Unlock()
	return nil
}

func hash(s string) uint64 {
	h := sha256.Sum256([]byte(s))
	return binary.BigEndian.Uint64(h[:8])
}

// Order returns the schedulers for key in ring order: the owner first, then the ones a
// failover would go to. Schedulers cooling down are left out; a scheduler whose cooldown
// ended is tried again (and restored by Succeeded).
func (r *Ring) Order(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	h := hash(key)
	start := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	var out []string
	seen := make(map[string]bool, len(r.addrs))
	for i := range r.points {
		p := r.points[(start+i)%len(r.points)]
		if seen[p.addr] {
			continue
		}
		seen[p.addr] = true
		if until, ok := r.down[p.addr]; ok && now.Before(until) {
			continue
		}
		out = append(out, p.addr)
		if len(seen) == len(r.addrs) {
			break
		}
	}
	return out
}

// Failed marks addr unavailable for the cooldown.
func (r *Ring) Failed(addr string) {
	r.mu.Lock()
	r.down[addr] = r.now().Add(r.cooldown)
	r.mu.Unlock()
}

// Succeeded restores addr.
func (r *Ring) Succeeded(addr string) {
	r.mu.Lock()
	delete(r.down, addr)
	r.mu.Unlock()
}

// Addrs returns every resolved scheduler address.
func (r *Ring) Addrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs)
}

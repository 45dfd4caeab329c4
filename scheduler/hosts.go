package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// AnnounceHost adds a host or replaces its description; its peers stay.
func (s *Scheduler) AnnounceHost(ctx context.Context, req *schedulerv1.AnnounceHostRequest) (*schedulerv1.AnnounceHostResponse, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if err := validAddress(req.GetBlockAddress()); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	h, ok := s.hosts[req.HostId]
	if !ok {
		h = &host{id: req.HostId, peers: make(map[string]*peer)}
		s.hosts[h.id] = h
		log.G(ctx).WithFields(log.Fields{"host": h.id, "type": req.Type, "address": req.BlockAddress}).Info("host announced")
	}
	wasSeed := h.isSeed()
	h.hostname = req.Hostname
	h.address = req.BlockAddress
	h.typ = req.Type
	h.sel.IDC = req.Idc
	h.sel.Location = req.Location
	h.sel.Seed = h.isSeed()
	h.sel.UploadCapacity = req.UploadCapacity
	h.sel.UploadSlots = req.UploadSlots
	h.lastSeen = s.opts.clock.Now()
	if h.watch != nil && wasSeed != h.isSeed() {
		if h.isSeed() {
			s.seeds[h.id] = h
			s.seedArrived(ctx)
		} else {
			delete(s.seeds, h.id)
		}
	}
	return &schedulerv1.AnnounceHostResponse{KeepaliveIntervalMs: s.intervalMs()}, nil
}

func (s *Scheduler) intervalMs() uint32 {
	return uint32(min(s.opts.interval.Milliseconds(), math.MaxUint32))
}

// Keepalive records that a host is alive and its state.
func (s *Scheduler) Keepalive(ctx context.Context, req *schedulerv1.KeepaliveRequest) (*schedulerv1.KeepaliveResponse, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if l := req.GetState().GetLoad(); math.IsNaN(l) || l < 0 {
		return nil, fmt.Errorf("load %v: want a number in [0, 1]: %w", l, errdefs.ErrInvalidArgument)
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	h, err := s.host(req.HostId)
	if err != nil {
		return nil, err
	}
	h.lastSeen = s.opts.clock.Now()
	if st := req.State; st != nil {
		h.sel.Reported = true
		h.sel.UploadRate = st.UploadRate
		h.sel.FreeUploadSlots = st.FreeUploadSlots
		h.sel.Load = min(st.Load, 1)
		h.downloadRate = st.DownloadRate
		h.taskCount = st.TaskCount
	}
	return &schedulerv1.KeepaliveResponse{KeepaliveIntervalMs: s.intervalMs()}, nil
}

// LeaveHost removes a host and all its peers. Leaving an unknown host succeeds: it is gone
// either way.
func (s *Scheduler) LeaveHost(ctx context.Context, req *schedulerv1.LeaveHostRequest) (*schedulerv1.LeaveHostResponse, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if h, ok := s.hosts[req.HostId]; ok {
		log.G(ctx).WithField("host", h.id).Info("host left")
		s.removeHost(ctx, h, fmt.Errorf("host %s left: %w", h.id, errdefs.ErrNotFound))
	}
	return &schedulerv1.LeaveHostResponse{}, nil
}

// host returns the host with id, or a NotFound error. The caller holds mu.
func (s *Scheduler) host(id string) (*host, error) {
	h, ok := s.hosts[id]
	if !ok {
		return nil, fmt.Errorf("host %q: %w", id, errdefs.ErrNotFound)
	}
	return h, nil
}

// removeHost removes h and its peers, reparenting their children at once, and ends its
// streams with why. The caller holds mu.
func (s *Scheduler) removeHost(ctx context.Context, h *host, why error) {
	s.prefetchHostGone(h)
	delete(s.hosts, h.id)
	delete(s.seeds, h.id)
	if h.watch != nil {
		h.watch.box.close(why)
		h.watch = nil
	}
	ps := make([]*peer, 0, len(h.peers))
	for _, p := range h.peers {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *peer) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range ps {
		s.removePeer(ctx, p, why, true)
	}
}

// Watch is a host's open command stream (WatchHost). One goroutine calls Next, sending what
// it returns; Close ends the watch from the host's side.
type Watch struct {
	s    *Scheduler
	host string
	box  *mailbox[*schedulerv1.HostCommand]
}

// WatchHost opens a host's command stream, replacing any earlier one, which ends. A seed host
// becomes eligible for seeding tasks while its watch is open, and is sent again every
// SeedTask it has not acted on (called RegisterPeer for, or opened the progress stream of)
// yet.
func (s *Scheduler) WatchHost(ctx context.Context, req *schedulerv1.WatchHostRequest) (*Watch, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	h, err := s.host(req.HostId)
	if err != nil {
		return nil, err
	}
	if h.watch != nil {
		h.watch.box.close(nil) // replaced: the old stream ends normally
	}
	w := &Watch{s: s, host: h.id, box: newMailbox[*schedulerv1.HostCommand](false, watchQueue)}
	h.watch = w
	ps := make([]*peer, 0, len(h.peers))
	for _, p := range h.peers {
		if p.seed && !p.registered {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *peer) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range ps {
		s.sendSeedTask(ctx, p)
	}
	if h.isSeed() {
		s.seeds[h.id] = h
		s.seedArrived(ctx)
	}
	return w, nil
}

// Next waits for the host's next command. It returns io.EOF when the scheduler ended the
// watch normally (a newer watch replaced it), another error when the host was removed
// (NotFound) or the scheduler closed, and ctx's error when ctx ends first.
func (w *Watch) Next(ctx context.Context) (*schedulerv1.HostCommand, error) {
	return w.box.next(ctx)
}

// Close ends the watch from the host's side; the host stops being eligible as a seed until
// it watches again.
func (w *Watch) Close() {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	w.box.close(nil)
	if h, ok := s.hosts[w.host]; ok && h.watch == w {
		h.watch = nil
		delete(s.seeds, h.id)
	}
}

// sendSeedTask puts a SeedTask for seed peer p on its host's watch. A full watch ends; the
// host re-opens it and gets the command again. The caller holds mu.
func (s *Scheduler) sendSeedTask(ctx context.Context, p *peer) {
	w := p.host.watch
	if w == nil {
		return
	}
	t := p.task
	cmd := &schedulerv1.HostCommand{Command: &schedulerv1.HostCommand_SeedTask{SeedTask: &schedulerv1.SeedTask{
		TaskId:     t.id,
		PeerId:     p.id,
		Source:     t.source,
		TaskSize:   t.size,
		BlockSize:  t.blockSize,
		BlockCount: t.blockCount,
	}}}
	if !w.box.put(cmd) {
		log.G(ctx).WithField("host", p.host.id).Warn("watch stream full: ending it so the host re-opens it")
		w.box.close(fmt.Errorf("too many commands pending for host %s: %w", p.host.id, errdefs.ErrUnavailable))
		p.host.watch = nil
		delete(s.seeds, p.host.id)
	}
}

// seedArrived gives a seed to the tasks that have a source but no provider, now that one can
// be asked. The caller holds mu.
func (s *Scheduler) seedArrived(ctx context.Context) {
	var ts []*task
	for _, t := range s.tasks {
		if t.providers == 0 && t.source != nil {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, func(a, b *task) int { return cmp.Compare(a.id, b.id) })
	for _, t := range ts {
		s.ensureProvider(ctx, t, nil)
	}
}

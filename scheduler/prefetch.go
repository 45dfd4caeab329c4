package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/rendezvous"
)

// maxPrefetchTasks bounds the tasks whose prefetch the scheduler remembers; the oldest go
// first.
const maxPrefetchTasks = 1024

// prefetches records, per task, the hosts asked to warm it (PrefetchTask) and how each
// ended. Guarded by Scheduler.mu.
type prefetches struct {
	byTask map[string]map[string]*schedulerv1.HostPrefetch
	order  []string // task ids, oldest first
}

// PrefetchTask implements the RPC: it sends a WarmTask to the hosts it picks.
func (s *Scheduler) PrefetchTask(ctx context.Context, req *schedulerv1.PrefetchTaskRequest) (*schedulerv1.PrefetchTaskResponse, error) {
	if err := validTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	src := req.GetSource()
	if src == nil || src.GetRegistry() == "" || src.GetRepository() == "" || src.GetBlobDigest() == "" {
		return nil, fmt.Errorf("source with registry, repository and blob digest is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var ids []string
	for _, h := range s.hosts {
		if h.watch != nil && !h.isSeed() {
			ids = append(ids, h.id)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no host watches this scheduler: none can be asked to warm a task: %w", errdefs.ErrFailedPrecondition)
	}
	slices.Sort(ids)
	if n := int(req.GetHosts()); n > 0 && n < len(ids) {
		ids = rendezvous.Rank(req.TaskId, ids)[:n]
		slices.Sort(ids)
	}
	cmd := &schedulerv1.HostCommand{Command: &schedulerv1.HostCommand_WarmTask{WarmTask: &schedulerv1.WarmTask{
		TaskId: req.TaskId, Source: proto.CloneOf(src), Files: slices.Clone(req.GetFiles()), All: req.GetAll()}}}
	hosts := s.prefetchHostsLocked(req.TaskId)
	for _, id := range ids {
		h := s.hosts[id]
		hp := &schedulerv1.HostPrefetch{HostId: id, State: schedulerv1.PrefetchState_PREFETCH_STATE_ASKED}
		if !h.watch.box.put(cmd) {
			log.G(ctx).WithField("host", id).Warn("watch stream full: ending it so the host re-opens it")
			h.watch.box.close(fmt.Errorf("too many commands pending for host %s: %w", id, errdefs.ErrUnavailable))
			h.watch = nil
			hp.State, hp.Message = schedulerv1.PrefetchState_PREFETCH_STATE_FAILED, "the host's command stream was full"
		}
		hosts[id] = hp
	}
	log.G(ctx).WithFields(log.Fields{"task": req.TaskId, "hosts": len(ids)}).Info("hosts asked to warm a task")
	return &schedulerv1.PrefetchTaskResponse{HostIds: ids}, nil
}

// prefetchHostsLocked returns the record of task's prefetch, made if new. The caller holds
// mu.
func (s *Scheduler) prefetchHostsLocked(task string) map[string]*schedulerv1.HostPrefetch {
	if hs, ok := s.prefetch.byTask[task]; ok {
		return hs
	}
	if len(s.prefetch.order) >= maxPrefetchTasks {
		delete(s.prefetch.byTask, s.prefetch.order[0])
		s.prefetch.order = s.prefetch.order[1:]
	}
	hs := make(map[string]*schedulerv1.HostPrefetch)
	s.prefetch.byTask[task] = hs
	s.prefetch.order = append(s.prefetch.order, task)
	return hs
}

// ReportPrefetch implements the RPC: a host says how a WarmTask ended.
func (s *Scheduler) ReportPrefetch(ctx context.Context, req *schedulerv1.ReportPrefetchRequest) (*schedulerv1.ReportPrefetchResponse, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if err := validTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	if st := req.GetState(); st != schedulerv1.PrefetchState_PREFETCH_STATE_DONE && st != schedulerv1.PrefetchState_PREFETCH_STATE_FAILED {
		return nil, fmt.Errorf("state %v: want DONE or FAILED: %w", st, errdefs.ErrInvalidArgument)
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	hp, ok := s.prefetch.byTask[req.TaskId][req.HostId]
	if !ok {
		return nil, fmt.Errorf("host %s was not asked to warm task %s: %w", req.HostId, req.TaskId, errdefs.ErrNotFound)
	}
	hp.State, hp.WarmedBytes, hp.Message = req.State, req.WarmedBytes, req.Message
	return &schedulerv1.ReportPrefetchResponse{}, nil
}

// GetPrefetch implements the RPC.
func (s *Scheduler) GetPrefetch(ctx context.Context, req *schedulerv1.GetPrefetchRequest) (*schedulerv1.GetPrefetchResponse, error) {
	if err := validTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	resp := &schedulerv1.GetPrefetchResponse{}
	for _, hp := range s.prefetch.byTask[req.TaskId] {
		resp.Hosts = append(resp.Hosts, proto.CloneOf(hp))
	}
	slices.SortFunc(resp.Hosts, func(a, b *schedulerv1.HostPrefetch) int { return cmp.Compare(a.HostId, b.HostId) })
	return resp, nil
}

// prefetchHostGone fails the prefetches host h had not reported on. The caller holds mu.
func (s *Scheduler) prefetchHostGone(h *host) {
	for _, hs := range s.prefetch.byTask {
		if hp, ok := hs[h.id]; ok && hp.State == schedulerv1.PrefetchState_PREFETCH_STATE_ASKED {
			hp.State, hp.Message = schedulerv1.PrefetchState_PREFETCH_STATE_FAILED, "the host left before it reported"
		}
	}
}

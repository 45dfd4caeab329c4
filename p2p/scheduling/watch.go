package scheduling

import (
	"context"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// watchLoop keeps a WatchHost stream open on addr and does what it is asked to: seed a task,
// or warm one.
func (c *Client) watchLoop(addr string) {
	defer c.wg.Done()
	backoff := 200 * time.Millisecond
	for c.ctx.Err() == nil {
		err := c.watch(addr)
		if c.ctx.Err() != nil {
			return
		}
		log.G(c.ctx).WithError(err).WithField("scheduler", addr).Debug("watch ended; watching again")
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Client) watch(addr string) error {
	cli, err := c.client(addr)
	if err != nil {
		return err
	}
	if err := c.announce(c.ctx, addr, cli); err != nil {
		return err
	}
	stream, err := cli.WatchHost(c.ctx, &schedulerv1.WatchHostRequest{HostId: c.host.ID})
	if err != nil {
		return err
	}
	for {
		cmd, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.NotFound {
				c.forget(addr)
			}
			return err
		}
		if wt := cmd.GetWarmTask(); wt != nil {
			c.warm(addr, cli, wt)
			continue
		}
		st := cmd.GetSeedTask()
		if st == nil || st.GetSource() == nil {
			continue
		}
		src := sourceOf(st.GetSource())
		if src.Task() != layer.TaskID(st.GetTaskId()) {
			log.G(c.ctx).WithField("task", st.GetTaskId()).Warn("seed task whose source names another layer; ignored")
			continue
		}
		reg := c.taskReg(src, int64(st.GetBlockSize()), false) // a seed task is never a private one
		c.mu.Lock()
		reg.sched, reg.peerID = addr, st.GetPeerId()
		c.mu.Unlock()
		if c.onSeed != nil {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.onSeed(c.ctx, src)
			}()
		}
	}
}

// TaskSource returns the scheduler's description of where src is read from (the inverse of
// sourceOf).
func TaskSource(src seed.Source) *schedulerv1.TaskSource {
	return &schedulerv1.TaskSource{
		Registry: src.Host, Repository: src.Repository, BlobDigest: src.Blob.Digest.String(),
		BlobMediaType: src.Blob.MediaType, BlobSize: uint64(max(src.Blob.Size, 0)), DiffId: src.DiffID.String(),
		RandomAccess: src.RandomAccess,
	}
}

// sourceOf returns the layer source ts describes.
func sourceOf(ts *schedulerv1.TaskSource) seed.Source {
	return seed.Source{
		Host: ts.GetRegistry(), Repository: ts.GetRepository(),
		Blob: ocispec.Descriptor{MediaType: ts.GetBlobMediaType(), Digest: digest.Digest(ts.GetBlobDigest()),
			Size: int64(ts.GetBlobSize())},
		DiffID:       digest.Digest(ts.GetDiffId()),
		RandomAccess: ts.GetRandomAccess(),
	}
}

// warm runs the WarmTask wt that the scheduler at addr sent, in a goroutine, and reports to
// it how it ended.
func (c *Client) warm(addr string, cli schedulerv1.SchedulerClient, wt *schedulerv1.WarmTask) {
	src := sourceOf(wt.GetSource())
	report := &schedulerv1.ReportPrefetchRequest{HostId: c.host.ID, TaskId: wt.GetTaskId(), State: schedulerv1.PrefetchState_PREFETCH_STATE_FAILED}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		switch {
		case c.onWarm == nil:
			report.Message = "this host does not warm tasks"
		case wt.GetSource() == nil || src.Task() != layer.TaskID(wt.GetTaskId()):
			report.Message = "the WarmTask's source names another task"
		default:
			n, err := c.onWarm(c.ctx, src, wt.GetFiles(), wt.GetAll())
			report.WarmedBytes = uint64(max(n, 0))
			if err != nil {
				report.Message = err.Error()
			} else {
				report.State = schedulerv1.PrefetchState_PREFETCH_STATE_DONE
			}
		}
		ctx, cancel := context.WithTimeout(c.ctx, callTimeout)
		defer cancel()
		if _, err := cli.ReportPrefetch(ctx, report); err != nil {
			log.G(ctx).WithError(err).WithFields(log.Fields{"task": wt.GetTaskId(), "scheduler": addr}).Warn("cannot report a warmed task")
		}
	}()
}

package scheduling

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// Host is what this node tells the scheduler about itself.
type Host struct {
	ID, Hostname string
	// BlockAddress is the host:port of this node's block service.
	BlockAddress  string
	IDC, Location string
	Seed          bool
	// Capacities in bytes/s (0 if unknown) and upload slots.
	UploadCapacity, DownloadCapacity uint64
	UploadSlots                      int
}

// State reports this node's live state for keepalives.
type State func() *schedulerv1.HostState

// callTimeout bounds one unary call to a scheduler.
const callTimeout = 10 * time.Second

// defaultKeepalive is used until a scheduler says otherwise.
const defaultKeepalive = 5 * time.Second

// flushInterval batches progress reports.
const flushInterval = 100 * time.Millisecond

// Client talks to the schedulers. It is safe for concurrent use.
type Client struct {
	host   Host
	state  State
	ring   *Ring
	onSeed func(ctx context.Context, src seed.Source)
	onWarm WarmHandler
	tls    *tls.Config // nil: plaintext
	access p2p.RegistryAccess

	mu        sync.Mutex
	conns     map[string]*grpc.ClientConn
	announced map[string]bool
	tasks     map[layer.TaskID]*taskReg
	keepalive time.Duration

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// taskReg is this node's registration on one task.
type taskReg struct {
	task layer.TaskID
	// schedID is the task's id at the schedulers: task, or for a private repository's layer
	// its private task (schedulerv1.PrivateTaskID).
	schedID   string
	private   bool
	src       seed.Source
	blockSize int64
	size      int64

	// Guarded by Client.mu.
	sched    string // scheduler holding the registration; "" when none does
	peerID   string
	hints    []fetch.Parent // the latest candidates a scheduler sent
	held     schedulerv1.Bitmap
	finished bool
	pending  []*schedulerv1.ProgressReport
	kick     chan struct{} // wakes the progress loop
	proved   time.Time     // when a refused private task last made it prove access again
}

// Option configures a Client.
type Option func(*Client)

// WithTLS has the client speak TLS with cfg to the schedulers (package tlsfiles makes a
// mutual-TLS one).
func WithTLS(cfg *tls.Config) Option { return func(c *Client) { c.tls = cfg } }

// WithRegistryAccess gives the client the proofs of access it registers private tasks
// with (p2p.WithRegistryAccess tells the node which layers are private).
func WithRegistryAccess(ra p2p.RegistryAccess) Option { return func(c *Client) { c.access = ra } }

// WithSeedHandler calls fn (in a goroutine) for every layer a scheduler asks this seed host
// to seed.
func WithSeedHandler(fn func(ctx context.Context, src seed.Source)) Option {
	return func(c *Client) { c.onSeed = fn }
}

// WarmHandler warms blocks of the layer src names into this node's cache, the blocks of the
// files that match files (all of them with all; what a start needs with neither), and
// returns the bytes it warmed. p2p.Node.Prefetch does this.
type WarmHandler func(ctx context.Context, src seed.Source, files []string, all bool) (int64, error)

// WithWarmHandler calls fn (in a goroutine) for every task a scheduler asks this host to warm
// (PrefetchTask), and reports to that scheduler how it ended. The client then watches every
// scheduler, as a seed does.
func WithWarmHandler(fn WarmHandler) Option {
	return func(c *Client) { c.onWarm = fn }
}

// New returns a client of the schedulers on ring, for host, and starts its keepalive (and,
// for a seed host or one with a WarmHandler, watching for commands). Close stops them.
func New(host Host, state State, ring *Ring, opts ...Option) *Client {
	c := &Client{host: host, state: state, ring: ring, conns: make(map[string]*grpc.ClientConn),
		announced: make(map[string]bool), tasks: make(map[layer.TaskID]*taskReg), keepalive: defaultKeepalive}
	for _, o := range opts {
		o(c)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.keepaliveLoop()
	if host.Seed || c.onWarm != nil {
		for _, addr := range ring.Addrs() {
			c.wg.Add(1)
			go c.watchLoop(addr)
		}
	}
	return c
}

// Close leaves every scheduler and stops the client's goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	addrs := make([]string, 0, len(c.announced))
	for a, ok := range c.announced {
		if ok {
			addrs = append(addrs, a)
		}
	}
	c.mu.Unlock()
	for _, a := range addrs {
		if cli, err := c.client(a); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			cli.LeaveHost(ctx, &schedulerv1.LeaveHostRequest{HostId: c.host.ID})
			cancel()
		}
	}
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.conns {
		cc.Close()
		delete(c.conns, a)
	}
	return nil
}

func (c *Client) client(addr string) (schedulerv1.SchedulerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		creds := insecure.NewCredentials()
		if c.tls != nil {
			creds = credentials.NewTLS(c.tls)
		}
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("scheduler %s: %w", addr, err)
		}
		c.conns[addr] = cc
	}
	return schedulerv1.NewSchedulerClient(cc), nil
}

// failover says whether err means the scheduler, not the request, failed.
func failover(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

// announce makes sure addr knows this host.
func (c *Client) announce(ctx context.Context, addr string, cli schedulerv1.SchedulerClient) error {
	c.mu.Lock()
	done := c.announced[addr]
	c.mu.Unlock()
	if done {
		return nil
	}
	typ := schedulerv1.HostType_HOST_TYPE_NORMAL
	if c.host.Seed {
		typ = schedulerv1.HostType_HOST_TYPE_SEED
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := cli.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{
		HostId: c.host.ID, Hostname: c.host.Hostname, BlockAddress: c.host.BlockAddress, Idc: c.host.IDC,
		Location: c.host.Location, Type: typ, UploadCapacity: c.host.UploadCapacity,
		DownloadCapacity: c.host.DownloadCapacity, UploadSlots: uint32(c.host.UploadSlots),
	})
	if err != nil {
		return fmt.Errorf("announce host to %s: %w", addr, err)
	}
	c.mu.Lock()
	c.announced[addr] = true
	if ms := resp.GetKeepaliveIntervalMs(); ms > 0 {
		c.keepalive = time.Duration(ms) * time.Millisecond
	}
	c.mu.Unlock()
	return nil
}

// withTask runs fn against the scheduler that holds reg, moving reg along the ring (and
// registering it again there) when a scheduler fails, and refreshing the list when all did.
func (c *Client) withTask(ctx context.Context, reg *taskReg, fn func(ctx context.Context, cli schedulerv1.SchedulerClient, peerID string) error) error {
	var errs []error
	for round := range 2 {
		if round == 1 {
			if err := c.ring.Refresh(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		for _, addr := range c.ring.Order(reg.schedID) {
			err := c.tryTask(ctx, addr, reg, fn)
			if err == nil {
				c.ring.Succeeded(addr)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
			if !failover(err) {
				return err
			}
			log.G(ctx).WithError(err).WithFields(log.Fields{"scheduler": addr, "task": reg.task}).Warn("scheduler failed; trying the next one on the ring")
			c.ring.Failed(addr)
			c.mu.Lock()
			c.announced[addr] = false
			if reg.sched == addr {
				reg.sched = ""
			}
			c.mu.Unlock()
		}
	}
	return fmt.Errorf("every scheduler failed: %w", errors.Join(errs...))
}

func (c *Client) tryTask(ctx context.Context, addr string, reg *taskReg, fn func(context.Context, schedulerv1.SchedulerClient, string) error) error {
	cli, err := c.client(addr)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	for attempt := range 2 {
		if err := c.announce(ctx, addr, cli); err != nil {
			return err
		}
		c.mu.Lock()
		here, peerID := reg.sched == addr, reg.peerID
		c.mu.Unlock()
		if !here {
			if peerID, err = c.registerAt(ctx, addr, cli, reg); err != nil {
				if status.Code(err) == codes.NotFound && attempt == 0 {
					c.forget(addr)
					continue
				}
				return err
			}
		}
		err = fn(ctx, cli, peerID)
		if status.Code(err) == codes.NotFound && attempt == 0 {
			// The scheduler lost this host or peer (it restarted): announce and register again.
			c.forget(addr)
			c.mu.Lock()
			reg.sched = ""
			c.mu.Unlock()
			continue
		}
		return err
	}
	return err
}

func (c *Client) forget(addr string) {
	c.mu.Lock()
	c.announced[addr] = false
	c.mu.Unlock()
}

// registerAt registers reg on addr and restarts its progress stream there.
func (c *Client) registerAt(ctx context.Context, addr string, cli schedulerv1.SchedulerClient, reg *taskReg) (string, error) {
	resp, err := c.register(ctx, cli, reg)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	reg.sched, reg.peerID = addr, resp.GetPeerId()
	reg.hints = parents(resp.GetCandidates())
	// The new scheduler learns what this peer holds from the first report of the stream.
	reg.pending = append([]*schedulerv1.ProgressReport{{Report: &schedulerv1.ProgressReport_HeldBitmap{HeldBitmap: reg.held}}}, reg.pending...)
	if reg.finished {
		reg.pending = append(reg.pending, finishedReport(reg))
	}
	c.mu.Unlock()
	c.kickProgress(reg)
	return resp.GetPeerId(), nil
}

func (c *Client) register(ctx context.Context, cli schedulerv1.SchedulerClient, reg *taskReg) (*schedulerv1.RegisterPeerResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := &schedulerv1.RegisterPeerRequest{HostId: c.host.ID, TaskId: reg.schedID, BlockSize: uint32(reg.blockSize)}
	if reg.size > 0 {
		req.TaskSize = uint64(reg.size)
		req.BlockCount = uint32(layer.BlockCount(reg.size, reg.blockSize))
	}
	if reg.src.Host != "" && (reg.src.DiffID != "" || reg.src.RandomAccess) { // a task known by its id alone has no source
		req.Source = TaskSource(reg.src)
	}
	if reg.private {
		proof, err := c.proof(ctx, reg.src)
		if err != nil {
			return nil, err
		}
		req.Access = &schedulerv1.RegistryAccess{Authorization: proof}
	}
	return cli.RegisterPeer(ctx, req)
}

// proof returns this node's proof that it may read src's repository, fresh enough to
// register with.
func (c *Client) proof(ctx context.Context, src seed.Source) (string, error) {
	if c.access == nil {
		return "", fmt.Errorf("layer %s is a private repository's, and this client has no registry access to prove it may read it", src.Task())
	}
	a, err := c.access.Access(ctx, src.Host, src.Repository, src.Blob.Digest)
	if err != nil {
		return "", fmt.Errorf("prove access to %s/%s: %w", src.Host, src.Repository, err)
	}
	if a.Authorization == "" {
		return "", fmt.Errorf("prove access to %s/%s: the registry gave no token", src.Host, src.Repository)
	}
	return a.Authorization, nil
}

func parents(cs []*schedulerv1.CandidateParent) []fetch.Parent {
	out := make([]fetch.Parent, 0, len(cs))
	for _, cp := range cs {
		// Every registered peer holds the task's index, with every block digest, before it
		// fetches a block; a seed serves digests as its pass produces them.
		out = append(out, fetch.Parent{ID: cp.GetPeerId(), Addr: cp.GetBlockAddress(), Vouches: true, Primary: cp.GetPrimary(), Source: cp.GetSource()})
	}
	return out
}

func (c *Client) taskReg(src seed.Source, blockSize int64, private bool) *taskReg {
	task := src.Task()
	c.mu.Lock()
	defer c.mu.Unlock()
	reg, ok := c.tasks[task]
	if !ok {
		// A node takes part in one task per layer: the first it registers, private or not.
		reg = &taskReg{task: task, schedID: string(task), private: private, src: src, blockSize: blockSize, kick: make(chan struct{}, 1)}
		if private {
			reg.schedID = schedulerv1.PrivateTaskID(TaskSource(src))
		}
		if src.RandomAccess {
			reg.size = src.Blob.Size // a blob's size is in its descriptor
		}
		c.tasks[task] = reg
		c.wg.Add(1)
		go c.progressLoop(reg)
	}
	return reg
}

// Register implements p2p.Scheduler.
func (c *Client) Register(ctx context.Context, src seed.Source, blockSize int64, private bool) (p2p.Registration, error) {
	reg := c.taskReg(src, blockSize, private)
	var out p2p.Registration
	err := c.withTask(ctx, reg, func(ctx context.Context, cli schedulerv1.SchedulerClient, _ string) error {
		// withTask registered reg here if it was not; a registration held elsewhere before is
		// refreshed so the answer carries this scheduler's directive.
		resp, err := c.register(ctx, cli, reg)
		if err != nil {
			return err
		}
		c.mu.Lock()
		reg.peerID = resp.GetPeerId()
		reg.hints = parents(resp.GetCandidates())
		c.mu.Unlock()
		out.Parents = parents(resp.GetCandidates())
		out.Directive = p2p.FetchFromParents
		if resp.GetDirective() == schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
			out.Directive = p2p.BackToSource
		}
		return nil
	})
	return out, err
}

// Parents implements fetch.ParentSource: the candidates the scheduler sent last, or new ones.
func (c *Client) Parents(ctx context.Context, task layer.TaskID, exclude []string) ([]fetch.Parent, error) {
	c.mu.Lock()
	reg := c.tasks[task]
	c.mu.Unlock()
	if reg == nil {
		return nil, fmt.Errorf("task %s: not registered", task)
	}
	var out []fetch.Parent
	err := c.withTask(ctx, reg, func(ctx context.Context, cli schedulerv1.SchedulerClient, peerID string) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := cli.GetCandidateParents(ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: peerID, TaskId: reg.schedID, ExcludedPeerIds: exclude})
		if err != nil {
			return err
		}
		out = parents(resp.GetCandidates())
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	hints := reg.hints
	c.mu.Unlock()
	// Parents the scheduler pushed on the progress stream come first; duplicates are merged
	// by the fetcher, which knows parents by id.
	return append(append([]fetch.Parent(nil), hints...), out...), nil
}

// BlockFetched implements fetch.Reporter.
func (c *Client) BlockFetched(task layer.TaskID, index int, parentID string, took time.Duration) {
	c.queue(task, func(reg *taskReg) *schedulerv1.ProgressReport {
		reg.held.Set(index)
		return &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{
			Indexes: []uint32{uint32(index)}, ParentPeerId: parentID, FetchDurationUs: uint64(took.Microseconds())}}}
	})
}

// BlockFailed implements fetch.Reporter.
func (c *Client) BlockFailed(task layer.TaskID, index int, parentID string, reason fetch.Reason, err error) {
	r := map[fetch.Reason]schedulerv1.FailureReason{
		fetch.ReasonDigestMismatch: schedulerv1.FailureReason_FAILURE_REASON_DIGEST_MISMATCH,
		fetch.ReasonTimeout:        schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT,
		fetch.ReasonConnection:     schedulerv1.FailureReason_FAILURE_REASON_CONNECTION,
		fetch.ReasonBusy:           schedulerv1.FailureReason_FAILURE_REASON_BUSY,
		fetch.ReasonNotFound:       schedulerv1.FailureReason_FAILURE_REASON_NOT_FOUND,
	}[reason]
	if reason == fetch.ReasonForbidden {
		// The parent does not know this node may read the private task (any more): prove
		// it to the scheduler again. The parent is not at fault.
		c.proveAgain(task)
		return
	}
	c.queue(task, func(*taskReg) *schedulerv1.ProgressReport {
		return &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_BlockFailure{BlockFailure: &schedulerv1.BlockFailure{
			Index: uint32(index), ParentPeerId: parentID, Reason: r, Message: err.Error()}}}
	})
}

// Holding implements p2p.Scheduler: this node holds the whole task.
func (c *Client) Holding(ctx context.Context, task layer.TaskID, size int64) error {
	c.mu.Lock()
	reg := c.tasks[task]
	c.mu.Unlock()
	if reg == nil {
		return fmt.Errorf("task %s: not registered", task)
	}
	c.queue(task, func(reg *taskReg) *schedulerv1.ProgressReport {
		reg.size, reg.finished = size, true
		for i := range layer.BlockCount(size, reg.blockSize) {
			reg.held.Set(i)
		}
		return finishedReport(reg)
	})
	return nil
}

func finishedReport(reg *taskReg) *schedulerv1.ProgressReport {
	return &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{
		TaskSize: uint64(reg.size), BlockCount: uint32(layer.BlockCount(reg.size, reg.blockSize))}}}
}

// queue adds a report, made under the client's lock, to task's progress stream.
func (c *Client) queue(task layer.TaskID, make func(*taskReg) *schedulerv1.ProgressReport) {
	c.mu.Lock()
	reg := c.tasks[task]
	if reg == nil {
		c.mu.Unlock()
		return
	}
	reg.pending = append(reg.pending, make(reg))
	c.mu.Unlock()
	c.kickProgress(reg)
}

func (c *Client) kickProgress(reg *taskReg) {
	select {
	case reg.kick <- struct{}{}:
	default:
	}
}

// progressLoop keeps reg's progress stream open on the scheduler holding reg, sends queued
// reports in batches, and takes the scheduler's commands.
func (c *Client) progressLoop(reg *taskReg) {
	defer c.wg.Done()
	var (
		stream    schedulerv1.Scheduler_SyncProgressClient
		on        string
		endStream = func() {}
	)
	defer func() { endStream() }()
	ticker := time.NewTicker(flushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-reg.kick:
		case <-ticker.C:
		}
		c.mu.Lock()
		sched, peerID, batch := reg.sched, reg.peerID, reg.pending
		reg.pending = nil
		c.mu.Unlock()
		if sched == "" && len(batch) > 0 {
			// The task's scheduler was lost (its stream broke): take the task along the ring
			// now, rather than on the daemon's next call, which may never come while it
			// fetches from the parents it has; the new scheduler learns what this peer holds
			// from the reports queued by registerAt.
			c.requeue(reg, batch)
			ctx, cancel := context.WithTimeout(c.ctx, callTimeout)
			err := c.withTask(ctx, reg, func(context.Context, schedulerv1.SchedulerClient, string) error { return nil })
			cancel()
			if err != nil {
				log.G(c.ctx).WithError(err).WithField("task", reg.task).Debug("no scheduler took the task; trying again")
			}
			continue
		}
		if sched == "" || len(batch) == 0 && stream != nil {
			continue
		}
		if sched != on || stream == nil {
			endStream()
			stream, endStream = nil, func() {}
			s, end, err := c.openProgress(sched)
			if err != nil {
				c.requeue(reg, batch)
				continue
			}
			stream, endStream = s, end
			on = sched
			c.wg.Add(1)
			go c.receive(reg, stream, sched)
		}
		for _, r := range merge(batch) {
			r.PeerId, r.TaskId = peerID, reg.schedID
			if err := stream.Send(r); err != nil {
				log.G(c.ctx).WithError(err).WithFields(log.Fields{"scheduler": sched, "task": reg.task}).Debug("progress stream broke")
				c.lost(reg, sched)
				stream = nil
				break
			}
		}
	}
}

// lost records that reg's progress stream on sched broke: reg registers again wherever the
// ring says, and tells the scheduler there what it holds.
func (c *Client) lost(reg *taskReg, sched string) {
	c.mu.Lock()
	if reg.sched == sched {
		reg.sched = ""
	}
	reg.pending = append([]*schedulerv1.ProgressReport{{Report: &schedulerv1.ProgressReport_HeldBitmap{HeldBitmap: reg.held}}}, reg.pending...)
	if reg.finished {
		reg.pending = append(reg.pending, finishedReport(reg))
	}
	c.mu.Unlock()
	c.kickProgress(reg)
}

// openProgress opens a progress stream on sched; end closes it.
func (c *Client) openProgress(sched string) (schedulerv1.Scheduler_SyncProgressClient, func(), error) {
	cli, err := c.client(sched)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	stream, err := cli.SyncProgress(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return stream, cancel, nil
}

func (c *Client) requeue(reg *taskReg, batch []*schedulerv1.ProgressReport) {
	if len(batch) == 0 {
		return
	}
	c.mu.Lock()
	reg.pending = append(batch, reg.pending...)
	c.mu.Unlock()
}

// merge folds consecutive NewBlocks reports from one parent into one.
func merge(batch []*schedulerv1.ProgressReport) []*schedulerv1.ProgressReport {
	var out []*schedulerv1.ProgressReport
	for _, r := range batch {
		nb := r.GetNewBlocks()
		if nb != nil && len(out) > 0 {
			if last := out[len(out)-1].GetNewBlocks(); last != nil && last.ParentPeerId == nb.ParentPeerId {
				last.Indexes = append(last.Indexes, nb.Indexes...)
				last.FetchDurationUs = max(last.FetchDurationUs, nb.FetchDurationUs)
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// receive takes the scheduler's commands on a progress stream until it ends.
func (c *Client) receive(reg *taskReg, stream schedulerv1.Scheduler_SyncProgressClient, sched string) {
	defer c.wg.Done()
	for {
		cmd, err := stream.Recv()
		if err != nil {
			if c.ctx.Err() == nil && status.Code(err) != codes.Canceled {
				// The scheduler went away: move on now, not at the next report sent.
				log.G(c.ctx).WithError(err).WithFields(log.Fields{"scheduler": sched, "task": reg.task}).Debug("progress stream broke")
				c.lost(reg, sched)
			}
			return
		}
		switch {
		case cmd.GetNewParents() != nil:
			ps := parents(cmd.GetNewParents().GetCandidates())
			c.mu.Lock()
			if reg.sched == sched {
				reg.hints = ps
			}
			c.mu.Unlock()
		case cmd.GetDirectiveChange() != nil:
			log.G(c.ctx).WithFields(log.Fields{"task": reg.task, "directive": cmd.GetDirectiveChange().GetDirective().String(), "message": cmd.GetDirectiveChange().GetMessage()}).Info("scheduler changed the directive of a task")
		}
	}
}

// keepaliveLoop sends this host's state to every scheduler that knows it.
func (c *Client) keepaliveLoop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		interval := c.keepalive
		var addrs []string
		for a, ok := range c.announced {
			if ok {
				addrs = append(addrs, a)
			}
		}
		c.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		for _, a := range addrs {
			cli, err := c.client(a)
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, callTimeout)
			_, err = cli.Keepalive(ctx, &schedulerv1.KeepaliveRequest{HostId: c.host.ID, State: c.state()})
			cancel()
			if status.Code(err) == codes.NotFound {
				c.forget(a) // announced again on the next call
			}
		}
	}
}

// proveAgainInterval bounds how often a refused private task proves access again.
const proveAgainInterval = time.Second

// proveAgain registers private task again, in the background, with a fresh proof of access:
// a parent refused it because the scheduler's grant, bound to the token's life, ended.
func (c *Client) proveAgain(task layer.TaskID) {
	c.mu.Lock()
	reg := c.tasks[task]
	if reg == nil || !reg.private || time.Since(reg.proved) < proveAgainInterval {
		c.mu.Unlock()
		return
	}
	reg.proved = time.Now()
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, callTimeout)
		defer cancel()
		err := c.withTask(ctx, reg, func(ctx context.Context, cli schedulerv1.SchedulerClient, _ string) error {
			_, err := c.register(ctx, cli, reg)
			return err
		})
		if err != nil {
			log.G(ctx).WithError(err).WithField("task", task).Warn("cannot prove access to a private task again")
		}
	}()
}

// CheckAccess implements p2p.AccessChecker: it asks the schedulers of the private task, in
// ring order, whether the host whose certificate names identity may read it, until one
// says yes.
func (c *Client) CheckAccess(ctx context.Context, task layer.TaskID, identity string) (bool, time.Duration, error) {
	c.mu.Lock()
	reg := c.tasks[task]
	c.mu.Unlock()
	if reg == nil || !reg.private {
		return false, 0, fmt.Errorf("task %s: not a private task this node registered", task)
	}
	var errs []error
	for _, addr := range c.ring.Order(reg.schedID) {
		cli, err := c.client(addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := cli.CheckAccess(cctx, &schedulerv1.CheckAccessRequest{TaskId: reg.schedID, Identity: identity})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("scheduler %s: %w", addr, err))
			continue
		}
		if resp.GetAllowed() {
			return true, time.Duration(resp.GetValidForMs()) * time.Millisecond, nil
		}
		errs = nil // a scheduler answered: no
	}
	if len(errs) > 0 {
		return false, 0, fmt.Errorf("ask the schedulers whether %s may read task %s: %w", identity, task, errors.Join(errs...))
	}
	return false, 0, nil
}

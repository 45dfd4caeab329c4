package scheduler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// AccessVerifier checks a host's proof that it may read a private task's repository
// (RegistryAccess): a HEAD of the source's blob at its registry with the proof. It returns
// when the proof expires, or an error: one wrapping errdefs.ErrPermissionDenied,
// errdefs.ErrUnauthenticated or errdefs.ErrNotFound for a proof the registry refused, any
// other when the registry could not check it.
// cmd/p2p-scheduler makes one of package registry's client.
type AccessVerifier interface {
	VerifyAccess(ctx context.Context, src *schedulerv1.TaskSource, authorization string) (expires time.Time, err error)
}

// WithAccessVerifier has the scheduler check proofs of access to private tasks with v.
// Without one it refuses every registration of a private task.
func WithAccessVerifier(v AccessVerifier) Option { return func(o *settings) { o.verifier = v } }

// deniedLifetime is how long a proof the registry refused is refused without asking again.
const deniedLifetime = 5 * time.Second

// proofs remembers what the registry said of each proof, so that the peers of one host,
// registering again, cost the registry one HEAD per token. Safe for concurrent use; it has
// its own lock because checking a proof is I/O, which never happens under Scheduler.mu.
type proofs struct {
	mu      sync.Mutex
	answers map[proofKey]proofAnswer
}

// proofKey is a proof for a repository: a token is good for every layer of it.
type proofKey struct {
	registry, repository string
	proof                [sha256.Size]byte
}

type proofAnswer struct {
	expires time.Time // good until then; zero when refused
	err     error
	until   time.Time // when the answer is forgotten
}

// CallerName returns the common name of the client certificate the TLS handshake of ctx's
// call verified, if any: the name a host's grants of access are given to.
func CallerName(ctx context.Context) (string, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	name := info.State.VerifiedChains[0][0].Subject.CommonName
	return name, name != ""
}

// checkPrivate checks a registration of a private task (its id is PrivateTaskID of its
// source) before the scheduler takes it: the caller's certificate name, and its proof of
// access, through the verifier. It returns the name and when the proof expires. It does I/O:
// the caller does not hold mu.
func (s *Scheduler) checkPrivate(ctx context.Context, req *schedulerv1.RegisterPeerRequest) (string, time.Time, error) {
	name, ok := CallerName(ctx)
	if !ok {
		return "", time.Time{}, fmt.Errorf("task %s is private: register it over mutual TLS, with a certificate naming this host: %w", req.TaskId, errdefs.ErrPermissionDenied)
	}
	proof := req.GetAccess().GetAuthorization()
	if proof == "" {
		return "", time.Time{}, fmt.Errorf("task %s is private: prove access to %s/%s (RegistryAccess): %w", req.TaskId, req.Source.GetRegistry(), req.Source.GetRepository(), errdefs.ErrPermissionDenied)
	}
	if s.opts.verifier == nil {
		return "", time.Time{}, fmt.Errorf("task %s is private, and this scheduler has no way to check access to registries: %w", req.TaskId, errdefs.ErrFailedPrecondition)
	}
	now := s.opts.clock.Now()
	key := proofKey{registry: req.Source.GetRegistry(), repository: req.Source.GetRepository(), proof: sha256.Sum256([]byte(proof))}
	s.proofs.mu.Lock()
	a, ok := s.proofs.answers[key]
	s.proofs.mu.Unlock()
	if !ok || !now.Before(a.until) {
		expires, err := s.opts.verifier.VerifyAccess(ctx, req.Source, proof)
		a = proofAnswer{expires: expires, until: expires}
		switch {
		case err == nil:
		case errdefs.IsPermissionDenied(err) || errdefs.IsUnauthorized(err) || errdefs.IsNotFound(err):
			a = proofAnswer{err: err, until: now.Add(deniedLifetime)}
		default: // not an answer: nothing is kept
			return "", time.Time{}, fmt.Errorf("task %s is private, and the registry could not check the proof of access of %s: %v: %w", req.TaskId, name, err, errdefs.ErrUnavailable)
		}
		s.proofs.mu.Lock()
		for k, old := range s.proofs.answers { // forget what has expired
			if !now.Before(old.until) {
				delete(s.proofs.answers, k)
			}
		}
		s.proofs.answers[key] = a
		s.proofs.mu.Unlock()
		log.G(ctx).WithFields(log.Fields{"task": req.TaskId, "host": req.HostId, "identity": name,
			"repository": req.Source.GetRegistry() + "/" + req.Source.GetRepository(), "granted": err == nil}).Info("checked a proof of access to a private task")
	}
	if a.err != nil {
		return "", time.Time{}, fmt.Errorf("task %s is private: the registry refused the proof of access of %s: %v: %w", req.TaskId, name, a.err, errdefs.ErrPermissionDenied)
	}
	return name, a.expires, nil
}

// grant lets the host whose certificate names name read private task t until expires. The
// caller holds mu.
func (t *task) grant(name string, expires time.Time) {
	t.private = true
	if t.grants == nil {
		t.grants = make(map[string]time.Time)
	}
	if expires.After(t.grants[name]) {
		t.grants[name] = expires
	}
}

// CheckAccess says whether the host whose certificate names req.Identity may read the
// private task req.TaskId: whether it registered for it with a proof of access still good.
// The answer is no for a task this scheduler does not know as private.
func (s *Scheduler) CheckAccess(ctx context.Context, req *schedulerv1.CheckAccessRequest) (*schedulerv1.CheckAccessResponse, error) {
	if err := validTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	if err := required("identity", req.GetIdentity()); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	now := s.opts.clock.Now()
	t := s.tasks[req.TaskId]
	if t == nil || !t.private {
		return &schedulerv1.CheckAccessResponse{ValidForMs: uint64(deniedLifetime.Milliseconds())}, nil
	}
	expires, ok := t.grants[req.Identity]
	if !ok || !now.Before(expires) {
		return &schedulerv1.CheckAccessResponse{ValidForMs: uint64(deniedLifetime.Milliseconds())}, nil
	}
	return &schedulerv1.CheckAccessResponse{Allowed: true, ValidForMs: uint64(expires.Sub(now).Milliseconds())}, nil
}

// expireGrants forgets the grants of private tasks that expired. The caller holds mu.
func (s *Scheduler) expireGrants(now time.Time) {
	for _, t := range s.tasks {
		for name, expires := range t.grants {
			if !now.Before(expires) {
				delete(t.grants, name)
			}
		}
	}
}

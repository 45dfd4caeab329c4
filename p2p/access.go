package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// RegistryAccess says whether a blob's repository needs credentials, and proves this node
// may read it. registry.Client does.
type RegistryAccess interface {
	Access(ctx context.Context, host, repository string, blob digest.Digest) (registry.Access, error)
}

// AccessChecker asks the schedulers whether the peer whose certificate names identity may
// read private task: whether it proved to them that it may read the task's repository. It
// returns how long the answer holds. A Scheduler that is one (scheduling.Client) is asked.
type AccessChecker interface {
	CheckAccess(ctx context.Context, task layer.TaskID, identity string) (allowed bool, valid time.Duration, err error)
}

// WithRegistryAccess has the node learn, for each layer, whether its repository is private.
// Blocks of a private repository's layer are served only to peers that proved to the
// scheduler that they may read that repository (see Admit); a node without a certificate
// to name itself to peers (WithPeerTLS), or whose registry takes no tokens, reads such a
// layer from the registry itself and shares it with no one. Without it every layer is
// taken as public.
func WithRegistryAccess(ra RegistryAccess) NodeOption { return func(nd *Node) { nd.access = ra } }

// Bounds of Admit: how long it waits for a scheduler's answer, and how long it keeps a no.
const (
	admitTimeout = 5 * time.Second
	refusalKept  = time.Second
)

type admission struct {
	identity string
	task     layer.TaskID
}

// shared reports whether this node takes part in the task of src through the scheduler. It
// does unless there is none, or the layer is a private repository's and this node cannot
// prove to peers who it is (no certificate) or to the scheduler that it may read it (the
// registry takes basic credentials, no token); it then reads the layer from the registry
// and serves it to no one. It returns whether the layer is private, which it notes: the
// block service serves a private task only to the peers the scheduler admits (Admit).
func (n *Node) shared(ctx context.Context, src seed.Source) (shared, private bool) {
	task := src.Task()
	if n.access != nil && src.Host != "" {
		a, err := n.access.Access(ctx, src.Host, src.Repository, src.Blob.Digest)
		switch {
		case err != nil:
			// Unknown for now: the layer is taken from peers as a public one, and left
			// unclassified, so peers are told it is not held here until a later call
			// learns its privacy.
			log.G(ctx).WithError(err).WithField("task", task).Warn("cannot tell whether a layer's repository is private; not serving it to peers for now")
		case a.Private && (!n.peerTLS || a.Authorization == "" || n.sched == nil):
			n.noteServed(task, servedToNone)
			log.G(ctx).WithFields(log.Fields{"task": task, "repository": src.Host + "/" + src.Repository, "certificate": n.peerTLS, "token": a.Authorization != ""}).
				Debug("a private repository's layer, and no certificate, token or scheduler to share it with: reading it from the registry")
			return false, true
		case a.Private:
			n.noteServed(task, servedToAdmitted)
			return true, true
		default:
			n.noteServed(task, servedToAll)
		}
	}
	return n.sched != nil, false
}

// privacy is how a node serves a layer, as its repository's privacy says.
type privacy int

const (
	servedToAll      privacy = iota + 1 // a public repository's: to every peer
	servedToAdmitted                    // a private one's: to the peers the scheduler admits
	servedToNone                        // a private one's: to no peer (this node does not share it)
)

func (n *Node) noteServed(task layer.TaskID, p privacy) {
	n.mu.Lock()
	n.private[task] = p
	n.mu.Unlock()
}

// Admit implements peer.Gate for the node's block service: any peer may read a public
// layer's blocks; a private one's go only to a peer whose certificate names a host the
// scheduler says proved, with a token still good, that it may read the layer's repository.
// With WithRegistryAccess, a layer whose repository the node has not asked about yet (one
// restored after a restart, until it is used again; one a seed is about to read) goes to no
// one: peers are told the node does not hold it. Answers are kept for as
// long as the scheduler says, a refusal for a second.
func (n *Node) Admit(ctx context.Context, identity string, task layer.TaskID) error {
	n.mu.Lock()
	served := n.private[task]
	n.mu.Unlock()
	switch served {
	case 0:
		if n.access == nil {
			return nil // every layer is taken as public
		}
		// Not classified yet: a seed still asking the registry, a layer held since before a
		// restart, one known by its id alone. Not held, as far as peers are concerned: they
		// ask again, or another parent.
		return fmt.Errorf("task %s: this node does not know yet whether its repository is private: %w", task, peer.ErrNotHeld)
	case servedToAll:
		return nil
	case servedToNone:
		return fmt.Errorf("task %s is a private repository's, which this node shares with no one: %w", task, peer.ErrForbidden)
	}
	if identity == "" {
		return fmt.Errorf("task %s is a private repository's: present a certificate: %w", task, peer.ErrForbidden)
	}
	checker, ok := n.sched.(AccessChecker)
	if !ok {
		return fmt.Errorf("task %s is a private repository's, and no scheduler can say who may read it: %w", task, peer.ErrForbidden)
	}
	key := admission{identity, task}
	now := time.Now()
	n.mu.Lock()
	kept, known := n.admitted[key]
	n.mu.Unlock()
	if known && now.Before(kept.until) {
		return kept.err
	}
	// One question to the scheduler for the many requests a new child sends at once.
	v, _, _ := n.admitting.Do(identity+"\x00"+string(task), func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admitTimeout)
		defer cancel()
		allowed, valid, err := checker.CheckAccess(cctx, task, identity)
		a := admitAnswer{until: time.Now().Add(refusalKept)}
		switch {
		case err != nil:
			a.err = fmt.Errorf("task %s is a private repository's, and the scheduler cannot say whether %s may read it: %v: %w", task, identity, err, peer.ErrForbidden)
		case !allowed:
			a.err = fmt.Errorf("task %s is a private repository's, and %s did not prove it may read it: %w", task, identity, peer.ErrForbidden)
		default:
			a.until = time.Now().Add(valid)
		}
		n.mu.Lock()
		for k, old := range n.admitted { // forget what has expired
			if !now.Before(old.until) {
				delete(n.admitted, k)
			}
		}
		n.admitted[key] = a
		n.mu.Unlock()
		return a, nil
	})
	return v.(admitAnswer).err
}

type admitAnswer struct {
	until time.Time
	err   error // nil: admitted
}

var _ peer.Gate = (*Node)(nil)

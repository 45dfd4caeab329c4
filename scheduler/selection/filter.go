package selection

// Host is what the scheduler knows of a host: its announcement and its last reported state.
type Host struct {
	// IDC and Location as announced; empty if unknown.
	IDC, Location string
	// Seed is true for a seed host.
	Seed bool
	// UploadCapacity in bytes per second; 0 if unknown.
	UploadCapacity uint64
	// UploadSlots is the announced limit of concurrent uploads; 0 if unlimited.
	UploadSlots uint32
	// Reported is true once the host sent its state; the fields below are that state.
	Reported bool
	// UploadRate in bytes per second.
	UploadRate uint64
	// FreeUploadSlots is UploadSlots minus the uploads running.
	FreeUploadSlots uint32
	// Load in [0, 1], as the host reported it.
	Load float64
}

// Candidate is a possible parent of the asking peer, as far as the filter and the evaluator
// need to know.
type Candidate struct {
	Host Host
	// Self is true when the candidate is the asking peer.
	Self bool
	// Excluded is true when the asking peer asked not to get it.
	Excluded bool
	// Descendant is true when the candidate fetches, directly or through others, from the
	// asking peer.
	Descendant bool
	// Serving is true when the candidate can pass blocks on: it holds some, reads the source,
	// or has parents of its own.
	Serving bool
	// Corrupt is true when a block from it failed verification.
	Corrupt bool
	// Failures counts its failed block requests since its last success.
	Failures int
	// Slow is true when its last block time was abnormal (Durations.Slow).
	Slow bool
	// Children is how many children the scheduler gave it.
	Children int
	// BlocksHeld of BlockCount blocks (BlockCount 0 when unknown); Complete when it holds the
	// whole verified task.
	BlocksHeld, BlockCount int
	Complete               bool
}

// Reason says why the filter ruled a candidate out; OK when it did not.
type Reason int

// Reasons, in the order the filter checks them.
const (
	OK Reason = iota
	ReasonSelf
	ReasonExcluded
	ReasonDescendant
	ReasonNotServing
	ReasonCorrupt
	ReasonFailing
	ReasonSlow
	ReasonNoFreeSlots
)

var reasonNames = [...]string{"ok", "self", "excluded", "descendant", "not serving", "corrupt", "failing", "slow", "no free upload slots"}

func (r Reason) String() string {
	if r < 0 || int(r) >= len(reasonNames) {
		return "unknown"
	}
	return reasonNames[r]
}

// DefaultMaxFailures is the number of failed requests in a row that make a parent failing.
const DefaultMaxFailures = 3

// Filter rules candidates out. The zero value uses DefaultMaxFailures.
type Filter struct {
	// MaxFailures failed requests in a row make a candidate failing; 0 means
	// DefaultMaxFailures.
	MaxFailures int
}

// Check returns the first rule c breaks, or OK.
func (f Filter) Check(c *Candidate) Reason {
	maxFailures := f.MaxFailures
	if maxFailures <= 0 {
		maxFailures = DefaultMaxFailures
	}
	switch {
	case c.Self:
		return ReasonSelf
	case c.Excluded:
		return ReasonExcluded
	case c.Descendant:
		return ReasonDescendant
	case !c.Serving:
		return ReasonNotServing
	case c.Corrupt:
		return ReasonCorrupt
	case c.Failures >= maxFailures:
		return ReasonFailing
	case c.Slow:
		return ReasonSlow
	case c.Host.UploadSlots > 0 && c.Host.Reported && c.Host.FreeUploadSlots == 0:
		return ReasonNoFreeSlots
	}
	return OK
}

// Bad reports whether c is a parent to replace even where the topology chose it (a tree
// parent): corrupt, failing or slow. Busy slots and the other rules do not make it bad.
func (f Filter) Bad(c *Candidate) bool {
	r := f.Check(&Candidate{Serving: true, Corrupt: c.Corrupt, Failures: c.Failures, Slow: c.Slow})
	return r != OK
}

package fetch

// QueuedBlocks returns how many blocks wait for a request slot at a parent.
func QueuedBlocks(f *Fetcher) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queued)
}

// PrimaryLacks is how many times in a row the primary parent may lack a block before the
// block is asked of the others.
const PrimaryLacks = primaryLacks

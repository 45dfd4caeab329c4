package fetch

// QueuedBlocks returns how many blocks wait for a request slot at a parent.
func QueuedBlocks(f *Fetcher) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queued)
}

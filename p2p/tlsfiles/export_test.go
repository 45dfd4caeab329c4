package tlsfiles

import "time"

// ExpireCheck makes id's next handshake check its files, as after checkInterval.
func ExpireCheck(id *Identity) {
	id.mu.Lock()
	id.checked = time.Time{}
	id.mu.Unlock()
}

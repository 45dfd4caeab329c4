package schedulerv1

import (
	"crypto/sha256"
	"encoding/hex"
)

// PrivateTaskID returns the id of the private task of src: the layer (or blob, with
// random_access) src names, as read from src's repository. It differs for every repository,
// so the peers of a private task are the hosts that proved they may read that repository
// (RegistryAccess), and never the hosts of the same layer in another repository.
func PrivateTaskID(src *TaskSource) string {
	stream := src.GetDiffId()
	if src.GetRandomAccess() {
		stream = src.GetBlobDigest()
	}
	h := sha256.New()
	for _, part := range []string{"p2p-snapshotter private task v1", src.GetRegistry(), src.GetRepository(), stream} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// StreamTaskID returns the id of the public task of src: the digest of the stream its peers
// exchange, the diffID, or the blob digest with random_access.
func StreamTaskID(src *TaskSource) string {
	if src.GetRandomAccess() {
		return src.GetBlobDigest()
	}
	return src.GetDiffId()
}

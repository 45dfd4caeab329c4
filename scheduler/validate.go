package scheduler

import (
	"fmt"
	"net"

	"github.com/containerd/errdefs"
)

// validTaskID checks the form "sha256:<64 lowercase hex>".
func validTaskID(id string) error {
	const prefix = "sha256:"
	if len(id) != len(prefix)+64 || id[:len(prefix)] != prefix {
		return fmt.Errorf("task id %q: want sha256:<64 lowercase hex>: %w", id, errdefs.ErrInvalidArgument)
	}
	for i := len(prefix); i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("task id %q: want sha256:<64 lowercase hex>: %w", id, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func required(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s is required: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func validAddress(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("block address %q: want host:port: %w", addr, errdefs.ErrInvalidArgument)
	}
	return nil
}

// blockCount checks a task's size, block size and block count against each other and
// returns the count: ceil(size / blockSize), or 0 when the size is unknown (0).
func blockCount(size uint64, blockSize, count uint32) (uint32, error) {
	if blockSize == 0 {
		return 0, fmt.Errorf("block size is required: %w", errdefs.ErrInvalidArgument)
	}
	if size == 0 {
		if count != 0 {
			return 0, fmt.Errorf("block count %d for an unknown size: %w", count, errdefs.ErrInvalidArgument)
		}
		return 0, nil
	}
	want := (size + uint64(blockSize) - 1) / uint64(blockSize)
	if want > maxBlockCount {
		return 0, fmt.Errorf("%d blocks: more than %d: %w", want, maxBlockCount, errdefs.ErrInvalidArgument)
	}
	if count != 0 && uint64(count) != want {
		return 0, fmt.Errorf("block count %d: size %d in blocks of %d makes %d: %w", count, size, blockSize, want, errdefs.ErrInvalidArgument)
	}
	return uint32(want), nil
}

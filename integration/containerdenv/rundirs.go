package containerdenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// containerdRunDirs are created by containerd, its shims and its clients whatever
// containerd's config says (shim sockets, client fifos, runc's state), deepest first.
var containerdRunDirs = []string{
	"/run/containerd/s",
	"/run/containerd/fifo",
	"/run/containerd/runc",
	"/run/containerd",
}

// runDirClaim tracks which of containerdRunDirs environments found missing (and so
// created) across the processes that may run environments at once, and even across a
// killed run.
//
// Every live environment holds a shared lock on base/.rundirs.lock. When it starts, it
// appends the directories that do not exist yet to base/.rundirs-created. At teardown it
// tries to turn its lock into an exclusive one: if that succeeds, no other environment is
// alive, and it removes every directory recorded there (its own and those of environments
// that ended while another still ran, or died), then the record.
type runDirClaim struct {
	base string
	lock *os.File
}

func claimRunDirs(ctx context.Context, base string) (*runDirClaim, error) {
	f, err := os.OpenFile(filepath.Join(base, ".rundirs.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flockWait(ctx, f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, err
	}
	var missing []string
	for _, d := range containerdRunDirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		rec, err := os.OpenFile(filepath.Join(base, ".rundirs-created"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err == nil {
			_, err = rec.WriteString(strings.Join(missing, "\n") + "\n")
			if cerr := rec.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("record run directories: %w", err)
		}
	}
	return &runDirClaim{base: base, lock: f}, nil
}

// release removes the recorded run directories if no other environment is alive.
func (c *runDirClaim) release() error {
	defer c.lock.Close()
	if err := unix.Flock(int(c.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // another environment is alive: the last one removes them
	}
	record := filepath.Join(c.base, ".rundirs-created")
	b, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	recorded := strings.Split(string(b), "\n")
	var errs []error
	// In containerdRunDirs order: the subdirectories before /run/containerd, which is
	// removed only if nothing else is left in it.
	for _, d := range containerdRunDirs {
		if !slices.Contains(recorded, d) {
			continue
		}
		if d == "/run/containerd" {
			err := os.Remove(d)
			if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, err)
			}
			continue
		}
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(record); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// flockWait takes a flock on f, polling so that ctx can interrupt the wait.
func flockWait(ctx context.Context, f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

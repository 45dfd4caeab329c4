package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// Sources the daemons can be built from (-src).
const (
	// srcHead: the commit checked out (HEAD), exported once at start-up.
	srcHead = "head"
	// srcWorktree: the working tree as it is at start-up, tracked and untracked files.
	srcWorktree = "worktree"
	// srcLive: the working tree as it is when each run starts (cluster.Start's own build).
	srcLive = "live"
)

var allSources = []string{srcHead, srcWorktree, srcLive}

// maxSnapshotFile leaves out of a worktree snapshot the large untracked files (binaries
// built in the tree) that no package needs.
const maxSnapshotFile = 8 << 20

// snapshotSource makes the tree every run builds from and changes the working directory
// into it: cluster.Start builds the daemons anew for each run, from the module above the
// working directory (containerdenv.ModuleRoot), so a tree that others edit during the
// benchmark would otherwise give each run different binaries. It returns a description of
// the source for the report, and the copy's directory ("" for srcLive).
func snapshotSource(kind, dir string) (desc, copyDir string, err error) {
	root, err := containerdenv.ModuleRoot()
	if err != nil {
		return "", "", err
	}
	rev := "unknown revision"
	if out, err := git(root, "describe", "--always", "--dirty"); err == nil {
		rev = strings.TrimSpace(string(out))
	}
	if kind == srcLive {
		return fmt.Sprintf("%s, rebuilt for each run from the working tree (%s)", rev, root), "", os.Chdir(root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	dst, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		return "", "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	switch kind {
	case srcHead:
		out, err := git(root, "archive", "--format=tar", "HEAD")
		if err != nil {
			return "", "", err
		}
		if err := untar(bytes.NewReader(out), dst); err != nil {
			return "", "", fmt.Errorf("export HEAD: %w", err)
		}
		head, err := git(root, "rev-parse", "--short", "HEAD")
		if err != nil {
			return "", "", err
		}
		rev = "commit " + strings.TrimSpace(string(head))
	case srcWorktree:
		out, err := git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
		if err != nil {
			return "", "", err
		}
		for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
			if err := copyFile(filepath.Join(root, name), filepath.Join(dst, name)); err != nil {
				return "", "", fmt.Errorf("copy the working tree: %w", err)
			}
		}
		rev = "working tree at " + rev
	default:
		return "", "", fmt.Errorf("unknown source %q", kind)
	}
	return fmt.Sprintf("%s (copied to %s at start-up)", rev, dst), dst, os.Chdir(dst)
}

func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// untar extracts the regular files and directories of a tar stream under dst.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dst+string(filepath.Separator)) {
			return fmt.Errorf("%q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// copyFile copies a regular file, keeping its mode; it skips what is gone, not regular, or
// larger than maxSnapshotFile.
func copyFile(src, dst string) error {
	st, err := os.Lstat(src)
	if os.IsNotExist(err) || err == nil && (!st.Mode().IsRegular() || st.Size() > maxSnapshotFile) {
		return nil
	}
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

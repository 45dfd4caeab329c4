package layerfs

import (
	"errors"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// withLowerAttributes returns x with every implicit directory (one the layer does not list
// but holds entries of) given the attributes of the same directory in the upper-most of
// lowerDirs that has it, as containerd's unpacker creates a missing parent: mode, owner,
// times and extended attributes. x itself is not changed.
func withLowerAttributes(x *layer.Index, lowerDirs []string) *layer.Index {
	if len(lowerDirs) == 0 {
		return x
	}
	var entries []layer.Entry
	for i := range x.Entries {
		e := &x.Entries[i]
		if !e.Implicit || e.Name == layer.RootName {
			continue
		}
		found, ok := lowerDir(lowerDirs, e.Name)
		if !ok {
			continue
		}
		if entries == nil {
			entries = append([]layer.Entry(nil), x.Entries...)
		}
		entries[i] = found
	}
	if entries == nil {
		return x
	}
	return &layer.Index{DiffID: x.DiffID, Blocks: x.Blocks, Entries: entries}
}

// lowerDir finds directory name in the upper-most of dirs that has something at name, and
// returns it as an entry. A non-directory there (a file, a whiteout) ends the search.
func lowerDir(dirs []string, name string) (layer.Entry, bool) {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return layer.Entry{}, false
		}
		return layer.Entry{
			Name: name, Type: layer.TypeDir, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			ModTimeSec: st.Mtim.Sec, ModTimeNsec: uint32(st.Mtim.Nsec), Xattrs: dirXattrs(p),
			Implicit: true,
		}, true
	}
	return layer.Entry{}, false
}

// dirXattrs reads the extended attributes of p, leaving out overlayfs's own.
func dirXattrs(p string) map[string]string {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		return nil
	}
	names := make([]byte, size)
	if size, err = unix.Llistxattr(p, names); err != nil {
		return nil
	}
	var out map[string]string
	for _, name := range strings.Split(string(names[:size]), "\x00") {
		if name == "" || overlayPrivate(name) {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, name, v)
		if errors.Is(err, unix.ENODATA) || err != nil {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[name] = string(v[:n])
	}
	return out
}

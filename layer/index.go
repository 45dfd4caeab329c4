package layer

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// EntryType is the kind of one index entry.
type EntryType uint8

// Entry types. Hardlink entries name their target in Linkname and share its data; Whiteout
// entries come from ".wh.NAME" markers and hide NAME of lower layers.
const (
	TypeRegular EntryType = iota + 1
	TypeDir
	TypeSymlink
	TypeHardlink
	TypeChar
	TypeBlock
	TypeFifo
	TypeWhiteout
)

var entryTypeNames = map[EntryType]string{
	TypeRegular: "file", TypeDir: "dir", TypeSymlink: "symlink", TypeHardlink: "hardlink",
	TypeChar: "char", TypeBlock: "block", TypeFifo: "fifo", TypeWhiteout: "whiteout",
}

func (t EntryType) String() string {
	if s, ok := entryTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// RootName is the name of the layer's root directory in an index.
const RootName = "."

// WhiteoutPrefix marks a tar entry that hides a name of the layers below.
const WhiteoutPrefix = ".wh."

// OpaqueMarker is the tar entry that marks its directory opaque.
const OpaqueMarker = ".wh..wh..opq"

// Entry is one file of a layer.
type Entry struct {
	// Name is the clean path relative to the layer root, without a leading slash, or RootName.
	Name string
	Type EntryType
	// Mode holds the permission bits with setuid, setgid and sticky (mask 07777).
	Mode     uint32
	UID, GID uint32
	// ModTime is seconds and nanoseconds since the Unix epoch.
	ModTimeSec  int64
	ModTimeNsec uint32
	// Size and Offset locate a regular file's data in the uncompressed stream.
	Size   int64
	Offset int64
	// Linkname is a symlink's target as written, or a hardlink's target entry name.
	Linkname           string
	DevMajor, DevMinor uint32
	// Xattrs are extended attributes, from PAX "SCHILY.xattr." records.
	Xattrs map[string]string
	// Opaque marks a directory whose lower-layer contents are hidden (".wh..wh..opq").
	Opaque bool
	// Implicit marks a directory the layer does not list but holds entries of. Extraction
	// creates it with the attributes of the same directory in the layers below (mode 0755,
	// owner root when there is none): the mode, owner and times here are those defaults.
	Implicit bool
}

// Index is the table of blocks of a layer's uncompressed stream and the files in it.
// Entries are in archive order; parents come before their children.
type Index struct {
	// DiffID is the digest of the whole uncompressed stream.
	DiffID  digest.Digest
	Blocks  BlockTable
	Entries []Entry

	lookupOnce sync.Once
	byName     map[string]int
	children   map[string][]int
}

// Task returns the task that the index describes.
func (x *Index) Task() TaskID { return TaskIDFromDigest(x.DiffID) }

func (x *Index) buildLookup() {
	x.byName = make(map[string]int, len(x.Entries))
	x.children = make(map[string][]int)
	for i := range x.Entries {
		e := &x.Entries[i]
		x.byName[e.Name] = i
		if e.Name != RootName {
			dir := ParentName(e.Name)
			x.children[dir] = append(x.children[dir], i)
		}
	}
}

// Lookup returns the entry with the given name.
func (x *Index) Lookup(name string) (*Entry, bool) {
	x.lookupOnce.Do(x.buildLookup)
	i, ok := x.byName[name]
	if !ok {
		return nil, false
	}
	return &x.Entries[i], true
}

// Children returns the entries directly inside directory dir, in archive order.
func (x *Index) Children(dir string) []*Entry {
	x.lookupOnce.Do(x.buildLookup)
	idx := x.children[dir]
	out := make([]*Entry, len(idx))
	for i, j := range idx {
		out[i] = &x.Entries[j]
	}
	return out
}

// Resolve follows a hardlink to the entry that holds its data; other entries resolve to
// themselves.
func (x *Index) Resolve(e *Entry) (*Entry, error) {
	if e.Type != TypeHardlink {
		return e, nil
	}
	t, ok := x.Lookup(e.Linkname)
	if !ok || !linkable(t.Type) {
		return nil, fmt.Errorf("hardlink %q: target %q is not a linkable entry", e.Name, e.Linkname)
	}
	return t, nil
}

// linkable reports whether a hardlink may point at an entry of type t.
func linkable(t EntryType) bool {
	switch t {
	case TypeRegular, TypeSymlink, TypeChar, TypeBlock, TypeFifo:
		return true
	}
	return false
}

// ParentName returns the name of the directory holding name.
func ParentName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return RootName
}

// ErrUnsafePath is wrapped by errors about names that would escape the layer root.
var ErrUnsafePath = errors.New("unsafe path")

// CleanName turns a tar entry name into an index name: leading "/" and "./" are dropped and
// the path is cleaned. A name with a ".." component is refused, whatever it would resolve to,
// as containerd's applier and GNU tar refuse it.
func CleanName(name string) (string, error) {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("name %q has a \"..\" component: %w", name, ErrUnsafePath)
		}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q has a NUL byte: %w", name, ErrUnsafePath)
	}
	clean := path.Clean("/" + name)
	if clean == "/" {
		return RootName, nil
	}
	return clean[1:], nil
}

// Validate checks everything a reader of the index relies on: a consistent block table,
// clean and unique names, every parent a directory that comes first, regular files inside
// the stream, hardlinks that resolve, and known types.
func (x *Index) Validate() error {
	if err := x.DiffID.Validate(); err != nil {
		return fmt.Errorf("index diffID: %w", err)
	}
	if err := x.Blocks.Validate(); err != nil {
		return fmt.Errorf("index block table: %w", err)
	}
	seen := make(map[string]EntryType, len(x.Entries))
	for i := range x.Entries {
		e := &x.Entries[i]
		if err := x.validateEntry(e, seen); err != nil {
			return fmt.Errorf("index entry %d %q: %w", i, e.Name, err)
		}
		seen[e.Name] = e.Type
	}
	return nil
}

func (x *Index) validateEntry(e *Entry, seen map[string]EntryType) error {
	if clean, err := CleanName(e.Name); err != nil {
		return err
	} else if clean != e.Name {
		return fmt.Errorf("name is not clean (want %q): %w", clean, ErrUnsafePath)
	}
	if _, dup := seen[e.Name]; dup {
		return errors.New("duplicate name")
	}
	if e.Name == RootName {
		if e.Type != TypeDir {
			return fmt.Errorf("root is a %s, not a dir", e.Type)
		}
	} else if t, ok := seen[ParentName(e.Name)]; !ok || t != TypeDir {
		return fmt.Errorf("parent %q is not a directory listed before it", ParentName(e.Name))
	}
	if e.Mode&^07777 != 0 {
		return fmt.Errorf("mode %o has bits outside 07777", e.Mode)
	}
	if e.ModTimeNsec >= 1e9 {
		return fmt.Errorf("mtime nanoseconds %d out of range", e.ModTimeNsec)
	}
	if e.Opaque && e.Type != TypeDir {
		return errors.New("opaque flag on a non-directory")
	}
	if e.Implicit && e.Type != TypeDir {
		return errors.New("implicit flag on a non-directory")
	}
	switch e.Type {
	case TypeRegular:
		if e.Size < 0 || e.Offset < 0 || e.Offset > x.Blocks.Size || e.Size > x.Blocks.Size-e.Offset {
			return fmt.Errorf("data [%d, +%d) outside the %d-byte stream", e.Offset, e.Size, x.Blocks.Size)
		}
	case TypeHardlink:
		if t, ok := seen[e.Linkname]; !ok || !linkable(t) {
			return fmt.Errorf("hardlink target %q is not an earlier linkable entry", e.Linkname)
		}
	case TypeDir, TypeSymlink, TypeChar, TypeBlock, TypeFifo, TypeWhiteout:
	default:
		return fmt.Errorf("unknown entry type %d", e.Type)
	}
	if e.Type != TypeRegular && (e.Size != 0 || e.Offset != 0) {
		return fmt.Errorf("%s with data [%d, +%d)", e.Type, e.Offset, e.Size)
	}
	if e.Type != TypeSymlink && e.Type != TypeHardlink && e.Linkname != "" {
		return fmt.Errorf("%s with a link target", e.Type)
	}
	if e.Type != TypeChar && e.Type != TypeBlock && (e.DevMajor != 0 || e.DevMinor != 0) {
		return fmt.Errorf("%s with device numbers", e.Type)
	}
	return nil
}

// SortedXattrKeys returns the keys of e.Xattrs in order.
func (e *Entry) SortedXattrKeys() []string {
	keys := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package ingest

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"strings"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

const (
	paxXattrPrefix  = "SCHILY.xattr."
	paxSparsePrefix = "GNU.sparse."
)

// Indexer turns tar headers, in stream order, into index entries as Build does: later
// entries replace earlier ones, whiteouts and opaque markers apply, hardlinks resolve to
// earlier files, missing parent directories appear. It serves layers whose headers come
// from elsewhere than one pass over a tar stream, such as an eStargz table of contents.
type Indexer struct{ b *indexBuilder }

// NewIndexer returns an Indexer holding only the root directory.
func NewIndexer() *Indexer { return &Indexer{b: newIndexBuilder()} }

// Add applies hdr, whose data starts at dataOffset of the stream the index addresses. The
// error wraps ErrMalformed for an entry no layer may hold.
func (x *Indexer) Add(hdr *tar.Header, dataOffset int64) error {
	if err := x.b.add(hdr, dataOffset); err != nil {
		return fmt.Errorf("%w: entry %q: %w", ErrMalformed, hdr.Name, err)
	}
	return nil
}

// Entries returns the entries so far, in the order Build's index lists them.
func (x *Indexer) Entries() []layer.Entry { return x.b.entries() }

// indexTar reads tar headers from br until the end-of-archive marker and returns the entries.
func indexTar(br *blockReader) ([]layer.Entry, error) {
	tr := tar.NewReader(br)
	x := NewIndexer()
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: tar header at offset %d: %w", ErrMalformed, br.offset(), err)
			}
			return nil, fmt.Errorf("tar header at offset %d: %w", br.offset(), err)
		}
		if err := x.Add(hdr, br.offset()); err != nil {
			return nil, err
		}
	}
	return x.Entries(), nil
}

// indexBuilder applies tar entries in order with the semantics of extracting them into an
// empty directory: a later entry replaces an earlier one of the same name, missing parents
// are created as 0755 directories, and whiteouts become entries of their own.
type indexBuilder struct {
	list   []layer.Entry
	byName map[string]int
	dead   int // entries in list replaced or removed, left as tombstones (Type 0)
}

func newIndexBuilder() *indexBuilder {
	b := &indexBuilder{byName: make(map[string]int)}
	b.put(layer.Entry{Name: layer.RootName, Type: layer.TypeDir, Mode: 0o755})
	return b
}

func (b *indexBuilder) add(hdr *tar.Header, dataOffset int64) error {
	name, err := layer.CleanName(hdr.Name)
	if err != nil {
		return err
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxSparsePrefix) {
			return errors.New("sparse files are not supported")
		}
	}
	base := path.Base(name)
	if strings.HasPrefix(base, layer.WhiteoutPrefix) {
		return b.addWhiteout(name, base, hdr)
	}
	e, err := entryFromHeader(name, hdr, dataOffset)
	if err != nil {
		return err
	}
	if e.Type == layer.TypeHardlink {
		if e.Linkname, err = layer.CleanName(hdr.Linkname); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		i, ok := b.byName[e.Linkname]
		if !ok || !linkable(b.list[i].Type) {
			return fmt.Errorf("hardlink to %q, which is not an earlier file of the layer", e.Linkname)
		}
		if t := &b.list[i]; t.Type == layer.TypeHardlink {
			e.Linkname = t.Linkname
		}
		b.applyLinkHeader(b.byName[e.Linkname], &e)
	}
	if name == layer.RootName {
		if e.Type != layer.TypeDir {
			return fmt.Errorf("the root is a %s", e.Type)
		}
		e.Opaque = b.list[0].Opaque
		b.list[0] = e
		return nil
	}
	if err := b.ensureDir(layer.ParentName(name)); err != nil {
		return err
	}
	b.replace(name, e)
	return nil
}

func (b *indexBuilder) addWhiteout(name, base string, hdr *tar.Header) error {
	dir := layer.ParentName(name)
	if err := b.ensureDir(dir); err != nil {
		return err
	}
	if base == layer.OpaqueMarker {
		b.list[b.byName[dir]].Opaque = true
		return nil
	}
	if strings.HasPrefix(base, layer.WhiteoutPrefix+layer.WhiteoutPrefix) {
		return nil // other aufs metadata (".wh..wh.plnk" and the like): never part of the tree
	}
	hidden := strings.TrimPrefix(base, layer.WhiteoutPrefix)
	if hidden == "" || hidden == "." {
		return fmt.Errorf("whiteout %q hides nothing", base)
	}
	e := layer.Entry{Type: layer.TypeWhiteout}
	setTime(&e, hdr)
	b.replace(path.Join(dir, hidden), e)
	return nil
}

// applyLinkHeader gives the inode a hardlink shares the owner, mode, times and xattrs of the
// hardlink's header, as containerd's (and Docker's) unpacker does: it applies every header to
// the file it creates, so the last header naming an inode sets its attributes.
func (b *indexBuilder) applyLinkHeader(target int, link *layer.Entry) {
	t := &b.list[target]
	if t.Type != layer.TypeSymlink { // chmod would follow the symlink
		t.Mode = link.Mode
	}
	t.UID, t.GID = link.UID, link.GID
	t.ModTimeSec, t.ModTimeNsec = link.ModTimeSec, link.ModTimeNsec
	for k, v := range link.Xattrs {
		if t.Xattrs == nil {
			t.Xattrs = make(map[string]string)
		}
		t.Xattrs[k] = v
	}
}

func entryFromHeader(name string, hdr *tar.Header, dataOffset int64) (layer.Entry, error) {
	e := layer.Entry{Name: name, Mode: uint32(hdr.Mode & 0o7777)}
	if hdr.Uid < 0 || hdr.Uid > math.MaxUint32 || hdr.Gid < 0 || hdr.Gid > math.MaxUint32 {
		return e, fmt.Errorf("owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	e.UID, e.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	setTime(&e, hdr)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont:
		e.Type, e.Size, e.Offset = layer.TypeRegular, hdr.Size, dataOffset
	case tar.TypeDir:
		e.Type = layer.TypeDir
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return e, errors.New("symlink with an empty target")
		}
		e.Type, e.Linkname = layer.TypeSymlink, hdr.Linkname
	case tar.TypeLink:
		e.Type = layer.TypeHardlink
	case tar.TypeChar, tar.TypeBlock:
		e.Type = layer.TypeChar
		if hdr.Typeflag == tar.TypeBlock {
			e.Type = layer.TypeBlock
		}
		if hdr.Devmajor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor < 0 || hdr.Devminor > math.MaxUint32 {
			return e, fmt.Errorf("device %d:%d out of range", hdr.Devmajor, hdr.Devminor)
		}
		e.DevMajor, e.DevMinor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		e.Type = layer.TypeFifo
	case tar.TypeGNUSparse:
		return e, errors.New("sparse files are not supported")
	default:
		return e, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if key, ok := strings.CutPrefix(k, paxXattrPrefix); ok && key != "" {
			if e.Xattrs == nil {
				e.Xattrs = make(map[string]string)
			}
			e.Xattrs[key] = v
		}
	}
	return e, nil
}

func setTime(e *layer.Entry, hdr *tar.Header) {
	if hdr.ModTime.IsZero() {
		return
	}
	e.ModTimeSec, e.ModTimeNsec = hdr.ModTime.Unix(), uint32(hdr.ModTime.Nanosecond())
}

func linkable(t layer.EntryType) bool {
	switch t {
	case layer.TypeRegular, layer.TypeSymlink, layer.TypeChar, layer.TypeBlock, layer.TypeFifo, layer.TypeHardlink:
		return true
	}
	return false
}

// ensureDir makes sure dir exists as a directory, creating missing ones as extraction would.
func (b *indexBuilder) ensureDir(dir string) error {
	if i, ok := b.byName[dir]; ok {
		if b.list[i].Type != layer.TypeDir {
			return fmt.Errorf("parent %q is a %s, not a directory", dir, b.list[i].Type)
		}
		return nil
	}
	if err := b.ensureDir(layer.ParentName(dir)); err != nil {
		return err
	}
	b.put(layer.Entry{Name: dir, Type: layer.TypeDir, Mode: 0o755, Implicit: true})
	return nil
}

func (b *indexBuilder) put(e layer.Entry) {
	b.byName[e.Name] = len(b.list)
	b.list = append(b.list, e)
}

// replace sets the entry called name to e. A directory that stays a directory keeps its
// place, children and opaque flag; anything else is removed (with its subtree) and e appended,
// as extraction unlinks the old file and creates a new one. Earlier hardlinks to a replaced
// file keep the old content, as they do on disk.
func (b *indexBuilder) replace(name string, e layer.Entry) {
	e.Name = name
	i, ok := b.byName[name]
	if !ok {
		b.put(e)
		return
	}
	old := &b.list[i]
	if old.Type == layer.TypeDir && e.Type == layer.TypeDir {
		e.Opaque = e.Opaque || old.Opaque
		*old = e
		return
	}
	if old.Type == layer.TypeDir {
		b.removeTree(name)
	} else if linkable(old.Type) {
		b.handOverLinks(i)
	}
	b.kill(i)
	b.put(e)
}

// handOverLinks makes the first hardlink to entry i the holder of its data and points the
// other links at it, before entry i goes away.
func (b *indexBuilder) handOverLinks(i int) {
	name, heir := b.list[i].Name, -1
	for j := i + 1; j < len(b.list); j++ {
		l := &b.list[j]
		if l.Type != layer.TypeHardlink || l.Linkname != name {
			continue
		}
		if heir < 0 {
			heir = j
			kept := b.list[i]
			kept.Name = l.Name
			*l = kept
			continue
		}
		l.Linkname = b.list[heir].Name
	}
}

func (b *indexBuilder) removeTree(dir string) {
	prefix := dir + "/"
	for j := range b.list {
		if b.list[j].Type != 0 && strings.HasPrefix(b.list[j].Name, prefix) {
			b.kill(j)
		}
	}
}

func (b *indexBuilder) kill(i int) {
	delete(b.byName, b.list[i].Name)
	b.list[i] = layer.Entry{}
	b.dead++
}

// entries returns the live entries in order.
func (b *indexBuilder) entries() []layer.Entry {
	if b.dead == 0 {
		return b.list
	}
	out := make([]layer.Entry, 0, len(b.list)-b.dead)
	for _, e := range b.list {
		if e.Type != 0 {
			out = append(out, e)
		}
	}
	return out
}

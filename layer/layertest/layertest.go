// Package layertest builds layer tar streams for tests, benchmarks and the demo: a layer with
// every entry type the index knows, and generated layers of a given size.
package layertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// File is one tar entry to write. Data is the content of a regular file.
type File struct {
	Header tar.Header
	Data   []byte
}

// Tar writes files as a tar stream.
func Tar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	if err := WriteTar(&buf, files); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTar writes files as a tar stream to w.
func WriteTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for i := range files {
		f := &files[i]
		h := f.Header
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("write header %q: %w", h.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("write %q: %w", h.Name, err)
		}
	}
	return tw.Close()
}

// Gzip compresses b at the default level.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Zstd compresses b at the default level.
func Zstd(b []byte) []byte {
	zw, _ := zstd.NewWriter(nil)
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

var epoch = time.Date(2024, 5, 17, 10, 30, 0, 0, time.UTC)

func dir(name string, mode int64, uid int) File {
	return File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX}}
}

func reg(name string, mode int64, data []byte) File {
	return File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: 1000, Gid: 1000, ModTime: epoch.Add(time.Hour), Format: tar.FormatPAX}, Data: data}
}

// Pattern returns n bytes of a repeatable, poorly compressible pattern.
func Pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// EveryType returns a layer holding every entry type the index knows: directories with
// unusual modes and owners, regular files (empty, small, spanning many blocks, setuid),
// symlinks, hardlinks, character and block devices, a fifo, extended attributes, names
// longer than 100 bytes in PAX, GNU and USTAR form, a whiteout and an opaque directory.
func EveryType() []File {
	long := strings.Repeat("long-directory-name/", 6) + "file-with-a-name-past-the-ustar-limit.txt"
	ustarLong := strings.Repeat("d", 90) + "/" + strings.Repeat("u", 60)
	gnuLong := "gnu/" + strings.Repeat("g", 120)
	xattrFile := reg("etc/with-xattrs", 0o640, []byte("xattrs\n"))
	xattrFile.Header.PAXRecords = map[string]string{
		"SCHILY.xattr.user.origin": "layertest",
		"SCHILY.xattr.user.empty":  "",
		"SCHILY.xattr.user.bin":    "\x00\x01\xff",
	}
	files := []File{
		dir("./", 0o755, 0),
		dir("bin/", 0o755, 0),
		dir("etc/", 0o755, 0),
		dir("tmp/", 0o1777, 0),
		dir("home/", 0o755, 0),
		dir("home/user/", 0o700, 1000),
		reg("etc/hostname", 0o644, []byte("layertest\n")),
		reg("etc/empty", 0o600, nil),
		xattrFile,
		reg("bin/tool", 0o4755, Pattern(1, 3*4096+123)),
		reg("home/user/big.bin", 0o644, Pattern(2, 70_000)),
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "tool", Uid: 0, Gid: 0, ModTime: epoch, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/abs-link", Linkname: "/etc/hostname", ModTime: epoch, Format: tar.FormatPAX}},
		// The same owner, mode and time as its target: GNU tar keeps the target's, containerd
		// applies the link's header to the shared inode, and here both agree.
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "bin/tool-hardlink", Linkname: "bin/tool", Mode: 0o4755, Uid: 1000, Gid: 1000, ModTime: epoch.Add(time.Hour), Format: tar.FormatPAX}},
		dir("dev/", 0o755, 0),
		{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: epoch, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop7", Mode: 0o660, Gid: 6, Devmajor: 7, Devminor: 7, ModTime: epoch, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "tmp/fifo", Mode: 0o620, ModTime: epoch, Format: tar.FormatPAX}},
	}
	for i := 1; i <= 6; i++ {
		files = append(files, dir(strings.Repeat("long-directory-name/", i), 0o755, 0))
	}
	files = append(files,
		reg(long, 0o644, []byte("pax long name\n")),
		dir(strings.Repeat("d", 90)+"/", 0o755, 0),
		File{Header: tar.Header{Typeflag: tar.TypeReg, Name: ustarLong, Mode: 0o644, ModTime: epoch, Format: tar.FormatUSTAR}, Data: []byte("ustar prefix\n")},
		dir("gnu/", 0o755, 0),
		File{Header: tar.Header{Typeflag: tar.TypeReg, Name: gnuLong, Mode: 0o644, ModTime: epoch, Format: tar.FormatGNU}, Data: []byte("gnu long name\n")},
		dir("var/", 0o755, 0),
		dir("var/cache/", 0o755, 0),
		reg("var/.wh.removed", 0o644, nil),
		reg("var/cache/.wh..wh..opq", 0o644, nil),
		reg("var/cache/fresh", 0o644, []byte("after the opaque marker\n")),
	)
	return files
}

// Generated returns a layer of about size bytes: nfiles small files with repeatable,
// compressible text-like content in a few directories, and one large file holding the rest.
func Generated(seed uint64, size int64, nfiles int) []File {
	r := rand.New(rand.NewPCG(seed, 1))
	files := []File{dir("data/", 0o755, 0), dir("data/small/", 0o755, 0)}
	var used int64
	words := []string{"layer", "block", "peer", "seed", "tree", "fuse", "cache", "image", "registry", "digest"}
	for i := range nfiles {
		var sb strings.Builder
		n := 512 + r.IntN(16<<10)
		for sb.Len() < n {
			sb.WriteString(words[r.IntN(len(words))])
			sb.WriteByte(" \n"[r.IntN(2)])
		}
		files = append(files, reg(fmt.Sprintf("data/small/f%05d.txt", i), 0o644, []byte(sb.String())))
		used += int64(sb.Len()) + 512
	}
	if rest := size - used; rest > 0 {
		files = append(files, reg("data/large.bin", 0o644, Pattern(seed, int(rest))))
	}
	return files
}

// EStargz converts the tar stream tarStream into an eStargz blob (estargz.Build with opts),
// and returns the blob and the digest of its TOC, which a manifest's layer annotation would
// name.
func EStargz(tarStream []byte, opts ...estargz.Option) ([]byte, digest.Digest, error) {
	blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarStream), 0, int64(len(tarStream))), opts...)
	if err != nil {
		return nil, "", fmt.Errorf("build eStargz: %w", err)
	}
	defer blob.Close()
	data, err := io.ReadAll(blob)
	if err != nil {
		return nil, "", fmt.Errorf("build eStargz: %w", err)
	}
	return data, blob.TOCDigest(), nil
}

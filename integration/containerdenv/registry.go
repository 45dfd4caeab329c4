package containerdenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// Registry is an in-process OCI registry (go-containerregistry's) served over plain HTTP on
// a free loopback port.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string
	srv  *http.Server
	done chan struct{}
	// blobBytes counts the bytes of blob bodies served (GET), ranges included, and byBlob
	// the same by digest (*atomic.Int64 values).
	blobBytes atomic.Int64
	byBlob    sync.Map
	// corrupt, if set, names a blob and the offset of a byte the registry flips whenever
	// it sends it (CorruptBlob).
	corrupt atomic.Pointer[corruption]
}

type corruption struct {
	digest string
	at     int64
}

// CorruptBlob makes the registry flip the byte at offset at of blob dgst whenever it sends
// it, whole or in a range: a registry, or a path to it, that alters what it serves.
func (r *Registry) CorruptBlob(dgst string, at int64) { r.corrupt.Store(&corruption{dgst, at}) }

// corruptingWriter flips the byte at offset at of a blob whose body starts at offset start.
type corruptingWriter struct {
	http.ResponseWriter
	pos, at int64
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if i := c.at - c.pos; i >= 0 && i < int64(len(p)) {
		p = bytes.Clone(p)
		p[i] ^= 0xff
	}
	n, err := c.ResponseWriter.Write(p)
	c.pos += int64(n)
	return n, err
}

// BlobBytesServed returns the bytes of blob content the registry has sent so far, whole
// blobs and ranges alike.
func (r *Registry) BlobBytesServed() int64 { return r.blobBytes.Load() }

// ResetCounters zeroes the counts of blob bytes served.
func (r *Registry) ResetCounters() {
	r.blobBytes.Store(0)
	r.byBlob.Clear()
}

// BlobBytesOf returns the bytes of blob dgst ("sha256:…") the registry has sent so far.
func (r *Registry) BlobBytesOf(dgst string) int64 {
	if n, ok := r.byBlob.Load(dgst); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// blobCounter returns the counter of the blob a request path names.
func (r *Registry) blobCounter(path string) *atomic.Int64 {
	n, _ := r.byBlob.LoadOrStore(path[strings.LastIndex(path, "/")+1:], new(atomic.Int64))
	return n.(*atomic.Int64)
}

// countingWriter counts the body bytes written through it, in all and of one blob.
type countingWriter struct {
	http.ResponseWriter
	n, blob *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	c.blob.Add(int64(n))
	return n, err
}

// StartRegistry serves a new, empty registry on 127.0.0.1, logging requests to logw.
func StartRegistry(logw io.Writer) (*Registry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("registry listen: %w", err)
	}
	r := &Registry{Host: ln.Addr().String(), done: make(chan struct{})}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(logw, "registry: ", log.LstdFlags|log.Lmicroseconds)))
	r.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
				w = countingWriter{ResponseWriter: w, n: &r.blobBytes, blob: r.blobCounter(req.URL.Path)}
				if c := r.corrupt.Load(); c != nil && strings.HasSuffix(req.URL.Path, "/blobs/"+c.digest) {
					var start int64
					fmt.Sscanf(req.Header.Get("Range"), "bytes=%d-", &start)
					w = &corruptingWriter{ResponseWriter: w, pos: start, at: c.at}
				}
			}
			reg.ServeHTTP(w, req)
		}),
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

// Handler is the registry itself, to serve it on other listeners too.
func (r *Registry) Handler() http.Handler { return r.srv.Handler }

// Close stops the registry at once, closing its connections. (A graceful Shutdown would
// wait up to 5 s for connections that clients opened but never sent a request on.)
func (r *Registry) Close() error {
	err := r.srv.Close()
	<-r.done
	return err
}

// Image is an image pushed to a Registry, with what a test needs to check a container of it.
type Image struct {
	// Ref is "HOST/REPO:TAG".
	Ref string
	// Digest is the manifest digest.
	Digest string
	// Layers are the layers, base first.
	Layers []ImageLayer
	// Files maps the absolute path of every regular file in the image (later layers
	// replacing earlier ones) to the hex SHA-256 of its content, as `sha256sum` prints it.
	Files map[string]string
}

// ImageLayer describes one pushed layer.
type ImageLayer struct {
	Digest string // of the compressed blob
	DiffID string // of the uncompressed tar
	Size   int64  // of the blob
}

// Push builds an image of the given layers (each a tar of files, gzip-compressed on the
// way) for linux/amd64 with Cmd ["/bin/sh"] and Env PATH=/bin, as an OCI image, and pushes
// it as repoTag ("REPO:TAG") to the registry.
func (r *Registry) Push(ctx context.Context, repoTag string, layers ...[]layertest.File) (*Image, error) {
	return r.push(ctx, repoTag, gzip.BestSpeed, []string{"/bin/sh"}, layers)
}

// PushCommand is Push of an image whose Cmd is cmd.
func (r *Registry) PushCommand(ctx context.Context, repoTag string, cmd []string, layers ...[]layertest.File) (*Image, error) {
	return r.push(ctx, repoTag, gzip.BestSpeed, cmd, layers)
}

// PushStored is Push with every layer gzip-compressed at level 0 ("stored": gzip framing,
// no compression). Large layers are built and pushed in a fraction of Push's time, and
// under the race detector, where Push compresses at a few MB/s, in a tenth of it. The
// daemon and containerd still take the layers' gzip path.
func (r *Registry) PushStored(ctx context.Context, repoTag string, layers ...[]layertest.File) (*Image, error) {
	return r.push(ctx, repoTag, gzip.NoCompression, []string{"/bin/sh"}, layers)
}

func (r *Registry) push(ctx context.Context, repoTag string, gzipLevel int, cmd []string, layers [][]layertest.File) (*Image, error) {
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	files := map[string]string{}
	var added []v1.Layer
	for i, lf := range layers {
		b, err := layertest.Tar(lf)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzipLevel))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		added = append(added, l)
		applyLayerFiles(files, lf)
	}
	img, err = mutate.AppendLayers(img, added...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	out := &Image{Ref: ref.Name(), Digest: dg.String(), Files: files}
	for _, l := range added {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		diff, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, ImageLayer{Digest: d.String(), DiffID: diff.String(), Size: size})
	}
	return out, nil
}

// PushBlob uploads blob, as it is, to repository ("REPO") of the registry: a layer built
// by the test itself, such as an eStargz blob, that no image needs to name.
func (r *Registry) PushBlob(ctx context.Context, repository string, blob []byte) error {
	repo, err := name.NewRepository(r.Host+"/"+repository, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.WriteLayer(repo, static.NewLayer(blob, types.OCILayer), remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push a blob to %s: %w", repo, err)
	}
	return nil
}

// applyLayerFiles updates files (path → sha256) with a layer's regular files, removing
// what its whiteouts and replaced entries remove. Hardlinks take their target's content.
func applyLayerFiles(files map[string]string, layerFiles []layertest.File) {
	for _, f := range layerFiles {
		p := path.Clean("/" + f.Header.Name)
		dir, base := path.Split(p)
		switch {
		case base == ".wh..wh..opq":
			removeUnder(files, path.Clean(dir))
			continue
		case strings.HasPrefix(base, ".wh."):
			target := path.Join(dir, strings.TrimPrefix(base, ".wh."))
			delete(files, target)
			removeUnder(files, target)
			continue
		}
		delete(files, p)
		removeUnder(files, p)
		switch f.Header.Typeflag {
		case tar.TypeReg:
			sum := sha256.Sum256(f.Data)
			files[p] = hex.EncodeToString(sum[:])
		case tar.TypeLink:
			if sum, ok := files[path.Clean("/"+f.Header.Linkname)]; ok {
				files[p] = sum
			}
		}
	}
}

func removeUnder(files map[string]string, dir string) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for p := range files {
		if strings.HasPrefix(p, prefix) {
			delete(files, p)
		}
	}
}

// BusyboxApplets are the commands the busybox layer links to /bin/busybox.
var BusyboxApplets = []string{
	"sh", "ash", "echo", "cat", "ls", "sha256sum", "md5sum", "wc", "head", "tail", "find",
	"stat", "test", "[", "true", "false", "sleep", "env", "id", "mkdir", "rm", "cp", "mv",
	"touch", "grep", "sort", "uniq", "cut", "du", "df", "mount", "ps", "dd", "tr", "xargs",
	"readlink", "ln", "chmod", "date", "uname", "hostname", "kill", "printf", "seq", "cmp",
}

var busyboxEpoch = time.Date(2024, 5, 17, 10, 30, 0, 0, time.UTC)

// BusyboxLayer returns the files of a minimal rootfs layer: a statically linked busybox
// (Debian's busybox-static installs one at path) as /bin/busybox with a symlink in /bin for
// each of BusyboxApplets, /etc/passwd and /etc/group for root, and empty /tmp, /proc, /sys,
// /dev and /root directories.
func BusyboxLayer(busyboxPath string) ([]layertest.File, error) {
	data, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (install Debian's busybox-static package)", err)
	}
	if err := checkStatic(busyboxPath); err != nil {
		return nil, err
	}
	dir := func(name string, mode int64) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: busyboxEpoch, Format: tar.FormatPAX}}
	}
	reg := func(name string, mode int64, data []byte) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: busyboxEpoch, Format: tar.FormatPAX}, Data: data}
	}
	files := []layertest.File{
		dir("bin/", 0o755),
		reg("bin/busybox", 0o755, data),
		dir("etc/", 0o755),
		reg("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")),
		reg("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
		dir("tmp/", 0o1777),
		dir("proc/", 0o555),
		dir("sys/", 0o555),
		dir("dev/", 0o755),
		dir("root/", 0o700),
	}
	for _, a := range BusyboxApplets {
		files = append(files, layertest.File{Header: tar.Header{
			Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: busyboxEpoch, Format: tar.FormatPAX,
		}})
	}
	return files, nil
}

// checkStatic refuses a dynamically linked binary: it would not run in a rootfs without
// its libraries, and the failure in the container ("no such file or directory") is obscure.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("busybox %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("busybox " + p + " is dynamically linked: install Debian's busybox-static package")
		}
	}
	return nil
}

// Test image contents: see TestImageLayers.
const (
	TestImageSeed      = 42
	TestImageDataSize  = 8 << 20
	TestImageDataFiles = 64
)

// TestImageLayers returns the layers of the standard test image: the busybox rootfs of
// BusyboxLayer("/bin/busybox"), then layertest.Generated(TestImageSeed, TestImageDataSize,
// TestImageDataFiles): /data/small/f00000.txt … and /data/large.bin.
func TestImageLayers() ([][]layertest.File, error) {
	bb, err := BusyboxLayer("/bin/busybox")
	if err != nil {
		return nil, err
	}
	return [][]layertest.File{bb, layertest.Generated(TestImageSeed, TestImageDataSize, TestImageDataFiles)}, nil
}

// PushTestImage pushes the standard test image (TestImageLayers) to r as repoTag.
func PushTestImage(t testing.TB, r *Registry, repoTag string) *Image {
	t.Helper()
	layers, err := TestImageLayers()
	if err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := r.Push(ctx, repoTag, layers...)
	if err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
	return img
}

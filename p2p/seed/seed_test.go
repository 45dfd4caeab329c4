package seed

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

const blockSize = 64 << 10

// testRegistry is a real in-process registry holding one layer blob; it counts blob GETs and
// can corrupt the blob it serves.
type testRegistry struct {
	host    string
	raw     []byte // the layer's uncompressed tar
	src     Source
	gets    atomic.Int64
	corrupt atomic.Bool
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	files := layertest.Generated(9, 600<<10, 40)
	files = append(files, layertest.EveryType()...)
	raw, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	tr.raw = raw
	inner := ggcrregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Method == http.MethodGet {
			tr.gets.Add(1)
			if tr.corrupt.Load() {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				if len(body) > 100 {
					body[len(body)/2] ^= 0xff
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")

	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(tr.host+"/test/layer", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, l); err != nil {
		t.Fatal(err)
	}
	dgst, _ := l.Digest()
	size, _ := l.Size()
	diffID, _ := l.DiffID()
	tr.src = Source{
		Host: tr.host, Repository: "test/layer",
		Blob:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(dgst.String()), Size: size},
		DiffID: digest.Digest(diffID.String()),
	}
	return tr
}

func newStore(t *testing.T, dir string, tr *testRegistry, cacheBlocks int) *Store {
	t.Helper()
	cache, err := blockcache.New(int64(cacheBlocks)*blockSize, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	s, err := New(dir, cache, registry.New(registry.WithInsecureRegistries(tr.host)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads every regular file of the layer through ReadStreamAt and compares it with the
// raw tar at the index's offsets.
func checkFiles(t *testing.T, l *Layer, raw []byte) {
	t.Helper()
	files := 0
	for _, e := range l.Index.Entries {
		if e.Type != layer.TypeRegular {
			continue
		}
		buf := make([]byte, e.Size)
		n, err := l.ReadStreamAt(context.Background(), buf, e.Offset)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == e.Size) {
			t.Fatalf("read %s: %v", e.Name, err)
		}
		if !bytes.Equal(buf, raw[e.Offset:e.Offset+e.Size]) {
			t.Fatalf("%s: content differs", e.Name)
		}
		files++
	}
	if files == 0 {
		t.Fatal("no files read")
	}
}

func TestSeedOnceThenServeFromCacheAndDisk(t *testing.T) {
	tr := newTestRegistry(t)
	dir := t.TempDir()
	s := newStore(t, dir, tr, 4) // a cache smaller than the layer: most reads come from disk
	l, err := s.Layer(context.Background(), tr.src)
	if err != nil {
		t.Fatal(err)
	}
	if l.Index.DiffID != tr.src.DiffID || l.Index.Blocks.Size != int64(len(tr.raw)) {
		t.Fatalf("index: diffID %s size %d", l.Index.DiffID, l.Index.Blocks.Size)
	}
	checkFiles(t, l, tr.raw)
	if again, err := s.Layer(context.Background(), tr.src); err != nil || again != l {
		t.Fatalf("second Layer: %v, same layer %v", err, again == l)
	}
	if got := tr.gets.Load(); got != 1 {
		t.Fatalf("blob fetched %d times, want 1", got)
	}

	// A new store on the same directory, as after a restart, opens the layer from disk.
	s2 := newStore(t, dir, tr, 4)
	l2, err := s2.Layer(context.Background(), tr.src)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, l2, tr.raw)
	if got := tr.gets.Load(); got != 1 {
		t.Fatalf("after a restart the blob was fetched again (%d GETs)", got)
	}
}

func TestConcurrentRequestsSeedOnce(t *testing.T) {
	tr := newTestRegistry(t)
	s := newStore(t, t.TempDir(), tr, 64)
	var wg sync.WaitGroup
	layers := make([]*Layer, 8)
	for i := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Layer(context.Background(), tr.src)
			if err != nil {
				t.Error(err)
			}
			layers[i] = l
		}()
	}
	wg.Wait()
	for _, l := range layers[1:] {
		if l != layers[0] {
			t.Fatal("concurrent requests got different layers")
		}
	}
	if got := tr.gets.Load(); got != 1 {
		t.Fatalf("blob fetched %d times, want 1", got)
	}
}

func TestCorruptBlobLeavesNothing(t *testing.T) {
	tr := newTestRegistry(t)
	tr.corrupt.Store(true)
	dir := t.TempDir()
	s := newStore(t, dir, tr, 64)
	if _, err := s.Layer(context.Background(), tr.src); err == nil {
		t.Fatal("a corrupt blob was accepted")
	}
	if s.cache.Stats().Blocks != 0 {
		t.Fatalf("%d blocks of a corrupt layer stayed in the cache", s.cache.Stats().Blocks)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("a failed pass left %v behind", entries)
	}
	tr.corrupt.Store(false)
	if _, err := s.Layer(context.Background(), tr.src); err != nil {
		t.Fatalf("retry after the registry recovered: %v", err)
	}
}

func TestWrongDiffIDIsRefused(t *testing.T) {
	tr := newTestRegistry(t)
	s := newStore(t, t.TempDir(), tr, 64)
	src := tr.src
	src.DiffID = digest.FromString("another layer")
	if _, err := s.Layer(context.Background(), src); !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrDigestMismatch", err)
	}
}

func TestUnreadableMediaTypeIsRefused(t *testing.T) {
	tr := newTestRegistry(t)
	s := newStore(t, t.TempDir(), tr, 64)
	src := tr.src
	src.Blob.MediaType = ocispec.MediaTypeImageLayerGzip + "+encrypted"
	if _, err := s.Layer(context.Background(), src); !errors.Is(err, ingest.ErrUnsupportedMediaType) {
		t.Fatalf("got %v, want ErrUnsupportedMediaType", err)
	}
	if got := tr.gets.Load(); got != 0 {
		t.Fatalf("the registry served the blob %d times; want 0", got)
	}
}

func TestCorruptStreamFileIsDetected(t *testing.T) {
	tr := newTestRegistry(t)
	dir := t.TempDir()
	s := newStore(t, dir, tr, 2)
	l, err := s.Layer(context.Background(), tr.src)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the last block on disk, then push it out of the cache.
	path := filepath.Join(dir, tr.src.DiffID.Encoded(), "stream")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := l.Index.Blocks.Count() - 1
	off, _ := l.Index.Blocks.Range(last)
	if _, err := f.WriteAt([]byte{0xAA, 0xBB}, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := 0; i < 3; i++ {
		s.cache.Remove(layer.BlockKey{Task: l.Index.Task(), Index: last - i})
	}
	_, err = l.ReadStreamAt(context.Background(), make([]byte, 10), off)
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrDigestMismatch from the corrupt stream file", err)
	}
}

// gatedOpener holds every blob open until the test releases it.
type gatedOpener struct {
	BlobOpener
	opened  chan struct{}
	release chan struct{}
}

func (g gatedOpener) OpenBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	close(g.opened)
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.BlobOpener.OpenBlob(ctx, host, repo, desc)
}

// TestWaiterHonoursItsOwnContext: a request that joins a pass under way waits only as long as
// its own context lets it, and neither its leaving nor the starter's cancelling stops the pass
// for the others.
func TestWaiterHonoursItsOwnContext(t *testing.T) {
	tr := newTestRegistry(t)
	cache, err := blockcache.New(64*blockSize, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	gate := gatedOpener{BlobOpener: registry.New(registry.WithInsecureRegistries(tr.host)), opened: make(chan struct{}), release: make(chan struct{})}
	s, err := New(t.TempDir(), cache, gate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	starter, cancelStarter := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := s.Layer(starter, tr.src)
		first <- err
	}()
	<-gate.opened
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Layer(ctx, tr.src); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter: got %v, want its own deadline", err)
	}
	cancelStarter()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("starter: got %v, want its own cancellation", err)
	}
	third := make(chan error, 1)
	go func() {
		_, err := s.Layer(context.Background(), tr.src)
		third <- err
	}()
	close(gate.release)
	if err := <-third; err != nil {
		t.Fatalf("the pass did not go on for a caller still waiting: %v", err)
	}
}

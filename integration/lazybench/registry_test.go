package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The registry serves ranges of a pushed blob, and the log adds up exactly the body bytes
// it sent since the last look.
func TestRegistryRangesAndLog(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "registry.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := httptest.NewServer(registryHandler(bufio.NewWriter(f)))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	img, err := random.Image(1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/test/img:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dg, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}

	rl := &registryLog{path: logPath}
	if _, _, _, err := rl.servedSince(); err != nil { // the push
		t.Fatal(err)
	}
	get := func(rng string) []byte {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v2/test/img/blobs/%s", srv.URL, dg), nil)
		if err != nil {
			t.Fatal(err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := get("bytes=100-199"); !bytes.Equal(got, blob[100:200]) {
		t.Errorf("range 100-199: got %d bytes, not the blob's", len(got))
	}
	if got := get(""); !bytes.Equal(got, blob) {
		t.Errorf("whole blob: got %d bytes; want the %d of the blob", len(got), len(blob))
	}
	n, requests, lines, err := rl.servedSince()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(100 + len(blob)); n != want || requests != 2 {
		t.Errorf("servedSince() = %d bytes in %d requests; want %d in 2\n%s", n, requests, want, strings.Join(lines, "\n"))
	}
	if n, requests, _, err := rl.servedSince(); err != nil || n != 0 || requests != 0 {
		t.Errorf("servedSince() again = %d, %d, %v; want nothing new", n, requests, err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestDemo runs the demo cluster, small: every peer gets every layer, the registry serves one
// copy of the blobs, the read back matches, and as root a FUSE mount reads right.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := runDemo(context.Background(), &out, demoOptions{peers: 3, layerMB: 4, cacheMB: 64, blockSize: 1 << 20, mbit: 400, registryMbit: 400, topology: "dag"})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := out.String()
	t.Log(got)
	for _, want := range []string{
		`distributed [0-9.]+ MB of layers to 3 peers in [0-9.]+m?s: [0-9.]+× the bound`,
		`\(1\.00 copies of the blobs\)`,
		`read back  [0-9]+ files, .*: all match`,
		`layer 2, application:\n.*4/4 peers complete\nseed0 \(seed\)`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("the demo's output has no match for %q", want)
		}
	}
	m := regexp.MustCompile(`: ([0-9.]+)× the bound`).FindStringSubmatch(got)
	if ratio, _ := strconv.ParseFloat(m[1], 64); ratio < 1 {
		t.Errorf("the demo reports %v× the bound: faster than physics allows, the bound or the clock is wrong", ratio)
	}
	var js bytes.Buffer
	if err := runDemo(context.Background(), &js, demoOptions{peers: 2, layerMB: 2, cacheMB: 64, blockSize: 1 << 20, mbit: 800, registryMbit: 800, topology: "tree", json: true}); err != nil {
		t.Fatal(err)
	}
	var sum demoSummary
	if err := json.Unmarshal(js.Bytes(), &sum); err != nil || sum.Peers != 2 || sum.RegistryBytes != sum.BlobBytes || sum.FilesChecked == 0 {
		t.Errorf("demo --json: got %+v, %v; want 2 peers, one copy of the blobs, files checked", sum, err)
	}
	if os.Geteuid() == 0 && !regexp.MustCompile(`fuse       application mounted at .*: [0-9]+ files .* read and checked`).MatchString(got) {
		t.Error("as root the demo did not mount a layer over FUSE and read it")
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
)

const testTask = "sha256:abcdef0000000000000000000000000000000000000000000000000000000001"

// startScheduler serves the status of a scheduler in tree mode where h0 reads the source and
// h1 and h2, its children in the binary tree, got four and two blocks from it.
func startScheduler(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	s, err := scheduler.New(scheduler.WithManualSweep(), scheduler.WithTopology(scheduler.ModeTree, 2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ids := map[string]string{}
	for _, h := range []string{"h0", "h1", "h2"} {
		if _, err := s.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{HostId: h, BlockAddress: h + ":65002"}); err != nil {
			t.Fatal(err)
		}
		resp, err := s.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: h, TaskId: testTask, TaskSize: 4 << 20, BlockSize: 1 << 20, BlockCount: 4,
			Source: &schedulerv1.TaskSource{Registry: "registry.test", Repository: "app", BlobDigest: testTask}})
		if err != nil {
			t.Fatal(err)
		}
		ids[h] = resp.PeerId
	}
	report := func(h, parent string, blocks ...uint32) {
		pr, err := s.OpenProgress(ctx, &schedulerv1.ProgressReport{PeerId: ids[h], TaskId: testTask, Report: &schedulerv1.ProgressReport_HeldBitmap{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pr.Close)
		if err := pr.Report(ctx, &schedulerv1.ProgressReport{PeerId: ids[h], TaskId: testTask, Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{
			Indexes: blocks, ParentPeerId: ids[parent], FetchDurationUs: 1000}}}); err != nil {
			t.Fatal(err)
		}
	}
	report("h1", "h0", 0, 1, 2, 3)
	report("h2", "h0", 0, 1)
	srv := httptest.NewServer(status.Handler(s))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestMain(m *testing.M) {
	_ = log.SetLevel("error") // the scheduler's logs are not the test's output
	os.Exit(m.Run())
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("p2pctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

func TestTree(t *testing.T) {
	url := startScheduler(t)
	got := run(t, "tree", "abcdef", "--scheduler", url)
	want := []string{
		testTask + "  tree, 4.2 MB in 4 blocks, 1/3 peers complete",
		"h0 (source) reads the registry",
		"├─ h1 100%, 4.2 MB in, 839 kB/s from h0",
		"└─ h2  50%, 2.1 MB in, 419 kB/s from h0",
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	var tj status.Task
	if err := json.Unmarshal([]byte(run(t, "tree", testTask, "--json", "--scheduler", url)), &tj); err != nil || len(tj.Peers) != 3 {
		t.Errorf("tree --json: got %d peers, %v; want 3", len(tj.Peers), err)
	}
}

func TestStatus(t *testing.T) {
	url := startScheduler(t)
	got := run(t, "status", "--scheduler", strings.TrimPrefix(url, "http://"))
	for _, want := range []string{"h0  ", "h1:65002", "abcdef000000  tree  4.2 MB  4       3      1         registry.test/app"} {
		if !strings.Contains(got, want) {
			t.Errorf("got\n%s\nwant a line with %q", got, want)
		}
	}
	cmd := newRootCommand()
	cmd.SetArgs([]string{"tree", "ffff", "--scheduler", url})
	cmd.SetOut(new(bytes.Buffer))
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "no such task") {
		t.Errorf("tree of an unknown task: got %v; want no such task", err)
	}
}

// TestTreeShowsPeersInACycle: two complete peers that each received most from the other
// hang from no root, and are printed all the same.
func TestTreeShowsPeersInACycle(t *testing.T) {
	var out bytes.Buffer
	printTree(&out, status.Task{ID: testTask, Mode: "dag", Peers: []status.Peer{
		{ID: "a", Host: "h0", Complete: true, Progress: 1, From: []status.Edge{{Parent: "b", Bytes: 3}}},
		{ID: "b", Host: "h1", Complete: true, Progress: 1, From: []status.Edge{{Parent: "a", Bytes: 2}}},
	}})
	for _, host := range []string{"h0 100%", "h1 100%"} {
		if !strings.Contains(out.String(), host) {
			t.Errorf("the tree has no %q:\n%s", host, out.String())
		}
	}
}

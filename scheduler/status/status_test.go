package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
)

const task = "sha256:0000000000000000000000000000000000000000000000000000000000000001"

// newScheduler returns a scheduler with a source peer on h0 and a child on h1 that reported
// two of the task's four blocks from it.
func newScheduler(t *testing.T) (*scheduler.Scheduler, string, string) {
	t.Helper()
	ctx := context.Background()
	s, err := scheduler.New(scheduler.WithManualSweep())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var ids []string
	for _, h := range []string{"h0", "h1"} {
		if _, err := s.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{HostId: h, BlockAddress: h + ":65002"}); err != nil {
			t.Fatal(err)
		}
		resp, err := s.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{HostId: h, TaskId: task, TaskSize: 4 << 20, BlockSize: 1 << 20, BlockCount: 4,
			Source: &schedulerv1.TaskSource{Registry: "registry.test", Repository: "app", BlobDigest: task}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.PeerId)
	}
	pr, err := s.OpenProgress(ctx, &schedulerv1.ProgressReport{PeerId: ids[1], TaskId: task, Report: &schedulerv1.ProgressReport_HeldBitmap{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pr.Close)
	err = pr.Report(ctx, &schedulerv1.ProgressReport{PeerId: ids[1], TaskId: task, Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{
		Indexes: []uint32{0, 1}, ParentPeerId: ids[0], FetchDurationUs: 2000}}})
	if err != nil {
		t.Fatal(err)
	}
	return s, ids[0], ids[1]
}

func get(t *testing.T, srv *httptest.Server, path string, v any) *http.Response {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return resp
}

func TestHandler(t *testing.T) {
	s, source, child := newScheduler(t)
	srv := httptest.NewServer(status.Handler(s))
	defer srv.Close()

	var hosts []status.Host
	get(t, srv, status.PathHosts, &hosts)
	if len(hosts) != 2 || hosts[0].ID != "h0" || hosts[0].Address != "h0:65002" || hosts[1].Tasks != 1 {
		t.Errorf("got hosts %+v; want h0 and h1, in one task each", hosts)
	}
	var tasks []status.TaskSummary
	get(t, srv, status.PathTasks, &tasks)
	if len(tasks) != 1 || tasks[0].ID != task || tasks[0].Peers != 2 || tasks[0].Repository != "app" || tasks[0].BlockCount != 4 {
		t.Errorf("got tasks %+v; want the task with 2 peers", tasks)
	}
	var got status.Task
	get(t, srv, status.TaskPath(task), &got)
	if len(got.Peers) != 2 {
		t.Fatalf("got %d peers; want 2", len(got.Peers))
	}
	c := got.Peers[1]
	want := fmt.Sprintf("%s on h1, progress 0.5, parents [{%s %d", child, source, 2<<20)
	if s := fmt.Sprintf("%s on %s, progress %v, parents %v", c.ID, c.Host, c.Progress, c.Parents); !strings.HasPrefix(s, want) {
		t.Errorf("got %s; want it to start %q", s, want)
	}
	if c.Parents[0].Rate <= 0 || c.Received != 2<<20 {
		t.Errorf("got edge %+v, received %d; want a rate, 2 MiB received", c.Parents[0], c.Received)
	}
	if p := got.Peers[0]; !p.Source || len(p.Parents) != 0 {
		t.Errorf("got first peer %+v; want the source, with no parent", p)
	}

	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{status.TaskPath("sha256:" + strings.Repeat("f", 64)), http.StatusNotFound, "not found"},
		{status.PathPage, http.StatusOK, "api/v1/tasks"},
		{"/nothing", http.StatusNotFound, ""},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s: got %d %.80q; want %d with %q", tc.path, resp.StatusCode, body, tc.code, tc.body)
		}
	}
}

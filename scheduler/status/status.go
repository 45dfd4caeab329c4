package status

import (
	"cmp"
	"embed"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Source is what the handler shows. *scheduler.Scheduler satisfies it.
type Source interface {
	Hosts() []scheduler.HostInfo
	Tasks() []scheduler.TaskSummary
	Inspect(taskID string) (scheduler.TaskInfo, error)
}

// Paths the handler serves.
const (
	PathHosts = "/api/v1/hosts"
	PathTasks = "/api/v1/tasks"
	PathPage  = "/"
)

// Host is a host in /api/v1/hosts. Rates are in bytes per second.
type Host struct {
	ID              string  `json:"id"`
	Hostname        string  `json:"hostname,omitempty"`
	Address         string  `json:"address"`
	Seed            bool    `json:"seed"`
	UploadCapacity  uint64  `json:"upload_capacity"`
	UploadRate      uint64  `json:"upload_rate"`
	DownloadRate    uint64  `json:"download_rate"`
	FreeUploadSlots uint32  `json:"free_upload_slots"`
	Load            float64 `json:"load"`
	Tasks           int     `json:"tasks"`
}

// TaskSummary is a task in /api/v1/tasks.
type TaskSummary struct {
	ID         string `json:"id"`
	Mode       string `json:"mode"`
	Registry   string `json:"registry,omitempty"`
	Repository string `json:"repository,omitempty"`
	Size       uint64 `json:"size"`
	BlockCount uint32 `json:"block_count"`
	Peers      int    `json:"peers"`
	Complete   int    `json:"complete"`
}

// Task is one task in /api/v1/tasks/{id}: its peers, each with its parents.
type Task struct {
	ID         string `json:"id"`
	Mode       string `json:"mode"`
	Size       uint64 `json:"size"`
	BlockSize  uint32 `json:"block_size"`
	BlockCount uint32 `json:"block_count"`
	Peers      []Peer `json:"peers"`
}

// Peer is a peer of a task.
type Peer struct {
	ID   string `json:"id"`
	Host string `json:"host"`
	// Source: it reads the registry (a seed, or sent back to source); Seed: a seed host's.
	Source   bool `json:"source"`
	Seed     bool `json:"seed"`
	Complete bool `json:"complete"`
	// Held blocks, and Progress, Held over the task's block count (1 when complete, 0
	// while the count is unknown).
	Held     int     `json:"held"`
	Progress float64 `json:"progress"`
	// Parents are its parents now, each with what it received from them.
	Parents []Edge `json:"parents"`
	// From is every peer it received blocks from, its parents now or before, most bytes
	// first: where its data came from once a complete peer has no parents any more.
	From []Edge `json:"from"`
	// Received is what it received from all of them.
	Received uint64 `json:"received"`
}

// Edge is a parent of a peer and what the peer received from it: bytes in all, and bytes per
// second over the last few seconds.
type Edge struct {
	Parent string  `json:"parent"`
	Bytes  uint64  `json:"bytes"`
	Rate   float64 `json:"rate"`
}

//go:embed page.html
var page embed.FS

// Handler returns the handler of the paths above.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathHosts, func(w http.ResponseWriter, _ *http.Request) {
		hs := src.Hosts()
		out := make([]Host, 0, len(hs))
		for _, h := range hs {
			out = append(out, Host{ID: h.ID, Hostname: h.Hostname, Address: h.Address, Seed: h.Seed, UploadCapacity: h.UploadCapacity,
				UploadRate: h.UploadRate, DownloadRate: h.DownloadRate, FreeUploadSlots: h.FreeUploadSlots, Load: h.Load, Tasks: h.Tasks})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET "+PathTasks, func(w http.ResponseWriter, _ *http.Request) {
		ts := src.Tasks()
		out := make([]TaskSummary, 0, len(ts))
		for _, t := range ts {
			out = append(out, TaskSummary{ID: t.ID, Mode: string(t.Mode), Registry: t.Registry, Repository: t.Repository, Size: t.Size,
				BlockCount: t.BlockCount, Peers: t.Peers, Complete: t.Complete})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET "+PathTasks+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		info, err := src.Inspect(r.PathValue("id"))
		if errors.Is(err, errdefs.ErrNotFound) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, taskOf(info))
	})
	mux.HandleFunc("GET "+PathPage+"{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, page, "page.html")
	})
	return mux
}

// taskOf returns the JSON form of info.
func taskOf(info scheduler.TaskInfo) Task {
	t := Task{ID: info.ID, Mode: string(info.Mode), Size: info.Size, BlockSize: info.BlockSize, BlockCount: info.BlockCount, Peers: []Peer{}}
	for _, p := range info.Peers {
		jp := Peer{ID: p.ID, Host: p.HostID, Source: p.Source, Seed: p.Seed, Complete: p.Complete, Held: p.Held, Parents: []Edge{}}
		switch {
		case p.Complete:
			jp.Progress = 1
		case info.BlockCount > 0:
			jp.Progress = min(1, float64(p.Held)/float64(info.BlockCount))
		}
		for _, parent := range p.Parents {
			f := p.In[parent]
			jp.Parents = append(jp.Parents, Edge{Parent: parent, Bytes: f.Bytes, Rate: f.Rate})
		}
		jp.From = []Edge{}
		for parent, f := range p.In {
			jp.Received += f.Bytes
			jp.From = append(jp.From, Edge{Parent: parent, Bytes: f.Bytes, Rate: f.Rate})
		}
		slices.SortFunc(jp.From, func(a, b Edge) int {
			if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
				return c
			}
			return cmp.Compare(a.Parent, b.Parent)
		})
		t.Peers = append(t.Peers, jp)
	}
	return t
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away
}

// TaskPath returns the path of task id's JSON.
func TaskPath(id string) string { return PathTasks + "/" + strings.TrimPrefix(id, "/") }

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
)

// defaultScheduler is the status address p2pctl asks when neither --scheduler nor
// P2P_SCHEDULER names one: a scheduler's metrics address on this host.
const defaultScheduler = "127.0.0.1:9103"

// schedulerFlag adds --scheduler to cmd and returns where its value lands.
func schedulerFlag(cmd *cobra.Command) *string {
	addr := os.Getenv("P2P_SCHEDULER")
	if addr == "" {
		addr = defaultScheduler
	}
	cmd.Flags().StringVar(&addr, "scheduler", addr, "the scheduler's status address (its --metrics-address), host:port or URL; $P2P_SCHEDULER")
	return &addr
}

// statusClient reads a scheduler's status JSON (package scheduler/status).
type statusClient struct {
	base *url.URL
	http *http.Client
}

func newStatusClient(addr string) (*statusClient, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--scheduler %q: want host:port or http://host:port", addr)
	}
	return &statusClient{base: u, http: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (c *statusClient) get(ctx context.Context, path string, v any) error {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("scheduler status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("scheduler status %s: %s: %s", u.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("scheduler status %s: %w", u.Path, err)
	}
	return nil
}

// task returns the task whose id is, or starts with, id (with or without "sha256:").
func (c *statusClient) task(ctx context.Context, id string) (status.Task, error) {
	var tasks []status.TaskSummary
	if err := c.get(ctx, status.PathTasks, &tasks); err != nil {
		return status.Task{}, err
	}
	var match []string
	for _, t := range tasks {
		if t.ID == id || strings.HasPrefix(t.ID, id) || strings.HasPrefix(strings.TrimPrefix(t.ID, "sha256:"), id) {
			match = append(match, t.ID)
		}
	}
	switch len(match) {
	case 0:
		return status.Task{}, fmt.Errorf("task %s: the scheduler has no such task", id)
	case 1:
	default:
		return status.Task{}, fmt.Errorf("task %s: ambiguous, it starts %d task ids", id, len(match))
	}
	var t status.Task
	err := c.get(ctx, status.TaskPath(match[0]), &t)
	return t, err
}

func newStatusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a scheduler's hosts and tasks",
		Long: `status reads the scheduler's status address (its --metrics-address) and prints its hosts
(block address, type, upload and download rates, free upload slots, tasks) and its tasks
(peers, how many are complete, where the task is read from).`,
		Args: cobra.NoArgs,
	}
	addr := schedulerFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, as the scheduler serves it")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := newStatusClient(*addr)
		if err != nil {
			return err
		}
		var out struct {
			Hosts []status.Host        `json:"hosts"`
			Tasks []status.TaskSummary `json:"tasks"`
		}
		if err := c.get(cmd.Context(), status.PathHosts, &out.Hosts); err != nil {
			return err
		}
		if err := c.get(cmd.Context(), status.PathTasks, &out.Tasks); err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cmd.OutOrStdout(), out)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "HOST\tADDRESS\tTYPE\tUPLOAD\tDOWNLOAD\tFREE SLOTS\tTASKS")
		for _, h := range out.Hosts {
			typ := "peer"
			if h.Seed {
				typ = "seed"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", h.ID, h.Address, typ, rate(float64(h.UploadRate)), rate(float64(h.DownloadRate)), h.FreeUploadSlots, h.Tasks)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "TASK\tMODE\tSIZE\tBLOCKS\tPEERS\tCOMPLETE\tSOURCE")
		for _, t := range out.Tasks {
			src := "-"
			if t.Registry != "" {
				src = t.Registry + "/" + t.Repository
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", shortID(t.ID), t.Mode, size(t.Size), t.BlockCount, t.Peers, t.Complete, src)
		}
		return w.Flush()
	}
	return cmd
}

func newTreeCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tree TASK",
		Short: "Show a task's tree or DAG, with each peer's progress and each edge's throughput",
		Long: `tree prints the peers of TASK (its id, or the start of it) as a tree from the peers that read
the registry: each peer with its progress and what it received, each under its first parent
with the rate it receives from that parent over the last few seconds. In a DAG a peer's other
parents follow on its line after "+".`,
		Args: cobra.ExactArgs(1),
	}
	addr := schedulerFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, as the scheduler serves it")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newStatusClient(*addr)
		if err != nil {
			return err
		}
		t, err := c.task(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cmd.OutOrStdout(), t)
		}
		printTree(cmd.OutOrStdout(), t)
		return nil
	}
	return cmd
}

// shownParents returns the edges printTree shows for p: its parents now, or, for a peer that
// has none any more (complete peers leave the topology), the peers it received most from.
func shownParents(p status.Peer) []status.Edge {
	if len(p.Parents) > 0 {
		return p.Parents
	}
	return p.From
}

// printTree writes t as a text tree: the peers with no parent at the top, every other peer
// under its first parent (or, once complete, the peer it received most from).
func printTree(w io.Writer, t status.Task) {
	complete := 0
	byID := make(map[string]status.Peer, len(t.Peers))
	for _, p := range t.Peers {
		byID[p.ID] = p
		if p.Complete {
			complete++
		}
	}
	children := make(map[string][]status.Peer)
	var roots []status.Peer
	for _, p := range t.Peers {
		if ps := shownParents(p); len(ps) > 0 {
			if _, ok := byID[ps[0].Parent]; ok {
				children[ps[0].Parent] = append(children[ps[0].Parent], p)
				continue
			}
		}
		roots = append(roots, p)
	}
	shape := fmt.Sprintf("%s in %d blocks", size(t.Size), t.BlockCount)
	if t.BlockCount == 0 {
		shape = "size not known yet" // a layer its seed is still reading
	}
	fmt.Fprintf(w, "%s  %s, %s, %d/%d peers complete\n", t.ID, t.Mode, shape, complete, len(t.Peers))
	host := func(id string) string {
		if p, ok := byID[id]; ok {
			return p.Host
		}
		return id
	}
	var walk func(p status.Peer, prefix, branch string, seen map[string]bool)
	walk = func(p status.Peer, prefix, branch string, seen map[string]bool) {
		done := fmt.Sprintf("%3.0f%%", 100*p.Progress)
		if t.BlockCount == 0 && !p.Complete {
			done = fmt.Sprintf("%d blocks", p.Held)
		}
		line := fmt.Sprintf("%s%s%s %s, %s in", prefix, branch, label(p), done, size(p.Received))
		if p.Source && p.Received == 0 && !p.Complete {
			line = fmt.Sprintf("%s%s%s reads the registry", prefix, branch, label(p))
		}
		for i, e := range shownParents(p) {
			if i == 0 {
				line += fmt.Sprintf(", %s from %s", orDash(rate(e.Rate)), host(e.Parent))
			} else {
				line += fmt.Sprintf("  + %s %s", host(e.Parent), orDash(rate(e.Rate)))
			}
		}
		fmt.Fprintln(w, line)
		if seen[p.ID] {
			return
		}
		seen[p.ID] = true
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		kids := children[p.ID]
		for i, k := range kids {
			b := "├─ "
			if i == len(kids)-1 {
				b = "└─ "
			}
			walk(k, next, b, seen)
		}
	}
	seen := map[string]bool{}
	for _, r := range roots {
		walk(r, "", "", seen)
	}
	// Peers that received most from each other (a cycle of "from") are reached from no root:
	// show them too.
	for _, p := range t.Peers {
		if !seen[p.ID] {
			walk(p, "", "", seen)
		}
	}
}

func label(p status.Peer) string {
	switch {
	case p.Seed:
		return p.Host + " (seed)"
	case p.Source:
		return p.Host + " (source)"
	}
	return p.Host
}

func orDash(s string) string {
	if s == "" {
		return "idle"
	}
	return s
}

// shortID returns the first 12 hex digits of a digest, as docker and nerdctl show ids.
func shortID(id string) string {
	hex := strings.TrimPrefix(id, "sha256:")
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// rate formats bytes per second, "" for none.
func rate(bps float64) string {
	switch {
	case bps <= 0:
		return ""
	case bps >= 1e6:
		return fmt.Sprintf("%.1f MB/s", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.0f kB/s", bps/1e3)
	}
	return fmt.Sprintf("%.0f B/s", bps)
}

// size formats a byte count.
func size(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// Package status serves a scheduler's state to operators over HTTP, read only, on its
// metrics address: JSON at /api/v1/hosts, /api/v1/tasks and /api/v1/tasks/{id}, and at / a
// page that draws each task's tree or DAG live from that JSON, with every peer's progress
// and the throughput of every edge (what a child received from that parent over the last
// few seconds, as its progress reports tell the scheduler).
//
// The JSON is the contract: p2pctl status and p2pctl tree read it too. Fields are only ever
// added.
package status

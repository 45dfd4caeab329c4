// Package integration holds the harnesses that run the system's real parts together:
// benchmarks that compare with external tools side by side in one run, and (as the other
// components land) tests that start containerd, registries and several hosts.
//
// Each harness is a main package in its own directory, run with `go run` or through the
// Makefile's bench target, and prints a table ready for docs/benchmarks.md.
package integration

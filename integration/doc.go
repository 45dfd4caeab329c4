// Package integration holds the harnesses that run the system's real parts together:
// benchmarks that compare with external tools side by side in one run, and tests that start
// containerd, registries and (later) several hosts.
//
//   - containerdenv: the reusable end-to-end harness, used from `go test` as root. It builds
//     containerd, ctr, the runc shim and nerdctl once into a cache outside the repository,
//     starts our p2p-snapshotter daemon and a containerd that uses it as its proxy
//     snapshotter, serves test images from an in-process registry on loopback, runs nerdctl
//     against them, and tears everything down (processes, mounts, directories) even when a
//     test fails or a run was killed.
//   - e2e: the end-to-end tests on it: pull and run with the p2p snapshotter and, as the
//     baseline, containerd's overlayfs; snapshots removed with the image; a daemon restart
//     under a running containerd.
//   - buildtools: `go run ./integration/buildtools` builds containerdenv's tools ahead of
//     the tests (CI does, so the builds do not count against a test timeout).
//   - ingestbench and other main packages: benchmarks, run with `go run` or through the
//     Makefile's bench target, each printing a table ready for docs/benchmarks.md.
package integration

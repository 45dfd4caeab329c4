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
//     baseline, containerd's overlayfs; lazy pulls through the daemon's registry mirror
//     (public and token-auth registries); fallback; daemon restarts under running
//     containers; filesystem equivalence with overlayfs; bounded memory.
//   - buildtools: `go run ./integration/buildtools` builds containerdenv's tools ahead of
//     the tests (CI does, so the builds do not count against a test timeout).
//   - ingestbench: the streaming pass against gzip -dc. lazybench: nerdctl pull + run behind
//     a 100 Mbit/s link (a registry in a network namespace with tbf), p2p against overlayfs
//     and stargz-snapshotter. stargzd: the stargz comparison daemon, a module of its own so
//     that our go.mod does not carry stargz's dependencies. Each benchmark prints a table
//     ready for docs/benchmarks.md.
package integration

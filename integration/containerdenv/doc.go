// Package containerdenv runs the real stack end to end from `go test`, as root: containerd
// v2 with our p2p-snapshotter daemon as its proxy snapshotter, each a separate process, a
// registry on loopback, and nerdctl and ctr pointed at them.
//
//	containerdenv.RequireRoot(t)             // skips with -short or when not root
//	env := containerdenv.New(t, containerdenv.Options{})
//	reg := env.StartRegistry(t)
//	img := containerdenv.PushTestImage(t, reg, "test/busybox:v1")
//	env.Nerdctl(t, "--snapshotter=p2p", "pull", img.Ref)
//	out := env.Nerdctl(t, "--snapshotter=p2p", "run", "--rm", "--net", "none", img.Ref, "sha256sum", "/data/large.bin")
//
// # Tools
//
// containerd, ctr and containerd-shim-runc-v2 (ContainerdVersion) and nerdctl
// (NerdctlVersion) are built with the go command into $P2P_TOOLS_DIR (DefaultToolsDir when
// unset), outside the repository, once: a stamp file there records the version of each, and
// a build of another version replaces them. A build takes a minute or two and prints
// progress on stderr. `go run ./integration/buildtools` builds them
// ahead of the tests (CI does). runc comes from the system (Debian's runc), busybox for the
// test image from Debian's busybox-static. Our daemon is built from the module for each
// environment (with -race when the test binary has it); the build cache makes that quick.
//
// # One environment
//
// New makes a directory under $P2P_TEST_DIR (DefaultBaseDir when unset) holding everything
// of one environment: the daemon's root and socket, containerd's root, state, config and
// sockets, nerdctl's config and data root, the certs.d hosts directory and the logs. The
// directory's name is short so that socket paths stay within the unix limit. containerd runs
// with CRI and NRI disabled and the daemon as [proxy_plugins.p2p]; nerdctl reads the
// environment's nerdctl.toml ($NERDCTL_TOML). Registries started with StartRegistry are made
// plain-HTTP hosts in certs.d.
//
// # Teardown
//
// t.Cleanup stops everything, pass or fail: containers are removed through nerdctl, then
// containerd and the daemon get SIGTERM (SIGKILL after 10 s), processes still naming the
// directory (shims, their containers) are killed, every mount below the directory is
// detached (umount -l, deepest first, so a FUSE mount whose server died cannot hang
// anything), /run/containerd/{s,fifo,runc} are removed if the harness created them and no
// other environment still runs, and the directory is removed. When the test failed, the tails
// of containerd's, the daemon's and the registry's logs go to the test log first. Daemons
// die with the test binary (Pdeathsig), and each New first removes what earlier runs whose
// process is gone left behind, so even a killed run does not break the next one.
package containerdenv

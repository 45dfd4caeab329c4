// Command buildtools builds the tools the containerd end-to-end tests run (containerd, ctr,
// containerd-shim-runc-v2 and nerdctl, at the versions integration/containerdenv pins) into
// $P2P_TOOLS_DIR or the default cache directory, unless they are there already. CI runs it
// before the tests so that the builds do not count against a test timeout.
//
//	go run ./integration/buildtools [-dir DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

func main() {
	dir := flag.String("dir", containerdenv.ToolsDir(), "directory for the binaries ($P2P_TOOLS_DIR)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tools, err := containerdenv.EnsureTools(ctx, *dir, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildtools:", err)
		os.Exit(1)
	}
	fmt.Printf("containerd %s, nerdctl %s in %s\n", containerdenv.ContainerdVersion, containerdenv.NerdctlVersion, tools.Dir)
}

// Command containerd-p2p is containerd with the p2p snapshotter built in: containerd's own
// main and built-in plugins, plus package plugin, which registers the snapshotter
// "io.containerd.snapshotter.v1.p2p". It is configured, run and managed as containerd is
// (docs/containerd.md, "Built into containerd").
//
// It is a module of its own, so that the snapshotter's module does not depend on all of
// containerd's built-in plugins: build it here with `go build` (or `make containerd-p2p`).
package main

import (
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	_ "github.com/p2pimage/p2p-snapshotter/snapshotter/plugin"
)

func main() {
	app := command.App()
	app.Name = "containerd-p2p"
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-p2p: %s\n", err)
		os.Exit(1)
	}
}

// Command p2p-snapshotter is the node daemon: a containerd proxy snapshotter that mounts layers
// lazily. Its snapshots service is being built (see docs/architecture.md); until it lands this
// binary only reports its version and refuses to start.
package main

import (
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("p2p-snapshotter", version)
		return
	}
	fmt.Fprintln(os.Stderr, "p2p-snapshotter: the snapshots service is not implemented in this version")
	os.Exit(2)
}

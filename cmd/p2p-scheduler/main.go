// Command p2p-scheduler decides which peers fetch which blocks from whom. Its API, parent
// selection and topologies are being built (see docs/architecture.md); until they land this
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
		fmt.Println("p2p-scheduler", version)
		return
	}
	fmt.Fprintln(os.Stderr, "p2p-scheduler: the scheduler service is not implemented in this version; a node daemon runs without one")
	os.Exit(2)
}

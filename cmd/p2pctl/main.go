// Command p2pctl is the operator's command line for the P2P image backend: it indexes layers,
// runs the demo of the block pipeline, warms an image's blocks into the node's cache
// (prefetch), writes a layer through the node's P2P network (get), and shows a scheduler's
// hosts and tasks (status) and a task's tree or DAG (tree).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/log"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "p2pctl:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "p2pctl",
		Short:         "Operate the P2P lazy-pulling image backend for containerd",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := log.SetLevel(logLevel); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "warn", "log level: trace, debug, info, warn, error")
	root.AddCommand(newIndexCommand(), newDemoCommand(), newGetCommand(), newStatusCommand(), newTreeCommand(), newPrefetchCommand())
	return root
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

func newIndexCommand() *cobra.Command {
	var (
		blockSize int64
		diffID    string
		list      bool
		asJSON    bool
		output    string
	)
	cmd := &cobra.Command{
		Use:   "index [flags] LAYER|-",
		Short: "Build the block table and file index of a layer blob (gzip, zstd or tar)",
		Long: `Reads a layer blob in one streaming pass, as a seed does, and prints its diffID, its
blocks and, with --list, its files in the manner of "tar -tv". --output writes the encoded
index to a file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := io.Reader(os.Stdin)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			x, err := ingest.Build(cmd.Context(), in, ingest.Options{BlockSize: blockSize, DiffID: digest.Digest(diffID)})
			if err != nil {
				return err
			}
			if output != "" {
				enc, err := x.Marshal()
				if err != nil {
					return err
				}
				if err := os.WriteFile(output, enc, 0o644); err != nil {
					return fmt.Errorf("write index: %w", err)
				}
			}
			if asJSON {
				return printIndexJSON(cmd.OutOrStdout(), x, list)
			}
			return printIndex(cmd.OutOrStdout(), x, list)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&blockSize, "block-size", layer.DefaultBlockSize, "block size in bytes")
	f.StringVar(&diffID, "diff-id", "", "expected digest of the uncompressed stream")
	f.BoolVarP(&list, "list", "l", false, "list every entry")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.StringVarP(&output, "output", "o", "", "write the encoded index to this file")
	return cmd
}

func printIndex(w io.Writer, x *layer.Index, list bool) error {
	idxDigest, err := x.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "diffID:     %s\nsize:       %d bytes\nblocks:     %d of %d bytes\nentries:    %d\nindex:      %s\n",
		x.DiffID, x.Blocks.Size, x.Blocks.Count(), x.Blocks.BlockSize, len(x.Entries), idxDigest)
	if !list {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for i := range x.Entries {
		e := &x.Entries[i]
		mtime := time.Unix(e.ModTimeSec, int64(e.ModTimeNsec)).UTC().Format("2006-01-02 15:04")
		detail := ""
		switch e.Type {
		case layer.TypeSymlink:
			detail = " -> " + e.Linkname
		case layer.TypeHardlink:
			detail = " link to " + e.Linkname
		case layer.TypeRegular:
			detail = fmt.Sprintf(" @%d", e.Offset)
		}
		if e.Opaque {
			detail += " (opaque)"
		}
		fmt.Fprintf(tw, "%s\t%04o\t%d/%d\t%d\t%s\t%s%s\n", e.Type, e.Mode, e.UID, e.GID, e.Size, mtime, e.Name, detail)
	}
	return tw.Flush()
}

func printIndexJSON(w io.Writer, x *layer.Index, list bool) error {
	idxDigest, err := x.Digest()
	if err != nil {
		return err
	}
	out := struct {
		DiffID      digest.Digest `json:"diffID"`
		Size        int64         `json:"size"`
		BlockSize   int64         `json:"blockSize"`
		Blocks      int           `json:"blocks"`
		Entries     int           `json:"entries"`
		IndexDigest digest.Digest `json:"indexDigest"`
		List        []layer.Entry `json:"list,omitempty"`
	}{x.DiffID, x.Blocks.Size, x.Blocks.BlockSize, x.Blocks.Count(), len(x.Entries), idxDigest, nil}
	if list {
		out.List = x.Entries
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Command ingestbench measures the streaming pass (decompress, cut into blocks, digest every
// block, hash the diffID, index the tar) against plain decompression of the same gzip layer in
// the same run: GNU gzip -dc, and Go decompression alone (klauspost/compress). The layer is a
// tar of a real directory tree (system libraries by default), compressed with gzip -6.
//
//	go run ./integration/ingestbench [-src /usr/lib/x86_64-linux-gnu] [-runs 5]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

func main() {
	src := flag.String("src", "/usr/lib/x86_64-linux-gnu", "directory tree to tar and gzip as the test layer")
	runs := flag.Int("runs", 5, "measurements of each contender; the median is reported")
	blockSize := flag.Int64("block-size", layer.DefaultBlockSize, "block size for the streaming pass")
	flag.Parse()
	if err := run(*src, *runs, *blockSize); err != nil {
		fmt.Fprintln(os.Stderr, "ingestbench:", err)
		os.Exit(1)
	}
}

func run(src string, runs int, blockSize int64) error {
	dir, err := os.MkdirTemp("", "ingestbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gz := filepath.Join(dir, "layer.tar.gz")
	fmt.Fprintf(os.Stderr, "making the layer: tar of %s | gzip -6 ...\n", src)
	script := fmt.Sprintf("tar -C %q -cf - . | gzip -6 > %q", src, gz)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		return fmt.Errorf("make layer: %v: %s", err, out)
	}
	st, err := os.Stat(gz)
	if err != nil {
		return err
	}

	var size int64
	contenders := []struct {
		name string
		run  func() (int64, error)
	}{
		{"gzip -dc > /dev/null", func() (int64, error) { return 0, gzipDC(gz) }},
		{"Go decompression only (klauspost gzip)", func() (int64, error) { return goDecompress(gz) }},
		{"streaming pass (decompress + blocks + digests + diffID + index)", func() (int64, error) {
			return streamingPass(gz, blockSize)
		}},
	}
	medians := make([]time.Duration, len(contenders))
	// Interleave the contenders so that drift in machine speed hits all of them alike.
	times := make([][]time.Duration, len(contenders))
	for r := 0; r < runs; r++ {
		for i, c := range contenders {
			start := time.Now()
			n, err := c.run()
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			times[i] = append(times[i], time.Since(start))
			if size == 0 {
				size = n
			}
		}
	}
	for i := range contenders {
		slices.Sort(times[i])
		medians[i] = times[i][len(times[i])/2]
	}
	fmt.Printf("Layer: tar of %s, %.1f MB uncompressed, %.1f MB gzip -6; median of %d runs; MB/s of uncompressed bytes.\n\n",
		src, float64(size)/1e6, float64(st.Size())/1e6, runs)
	fmt.Println("| contender | median time | MB/s | time / gzip -dc |")
	fmt.Println("|---|---|---|---|")
	for i, c := range contenders {
		fmt.Printf("| %s | %.2f s | %.0f | %.2f× |\n", c.name, medians[i].Seconds(),
			float64(size)/1e6/medians[i].Seconds(), medians[i].Seconds()/medians[0].Seconds())
	}
	var all []string
	for i, c := range contenders {
		all = append(all, fmt.Sprintf("%s: %v", c.name, times[i]))
	}
	fmt.Fprintln(os.Stderr, strings.Join(all, "\n"))
	return nil
}

// gzipDC runs GNU gzip writing straight to /dev/null, so no pipe slows it down.
func gzipDC(path string) error {
	if out, err := exec.Command("sh", "-c", fmt.Sprintf("gzip -dc %q > /dev/null", path)).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func goDecompress(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, zr)
}

func streamingPass(path string, blockSize int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	x, err := ingest.Build(context.Background(), f, ingest.Options{BlockSize: blockSize})
	if err != nil {
		return 0, err
	}
	return x.Blocks.Size, nil
}

package netlab

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkRelay measures a host that downloads and uploads at once, as every peer of a
// distribution does: the acknowledgements of its download share its capped uplink with
// its upload. It reports each direction's payload rate over the cap:
// go test -run '^$' -bench Relay -benchtime 1x.
func BenchmarkRelay(b *testing.B) {
	l := newLab(b, "nlrl", "10.213.4.0/24")
	ctx := context.Background()
	const rate = 160 * Mbit
	src := addHost(b, l, "src", Limits{Up: rate, Down: rate})
	mid := addHost(b, l, "mid", Limits{Up: rate, Down: rate})
	dst := addHost(b, l, "dst", Limits{Up: rate, Down: rate})
	midSink, dstSink := sink(b, mid, 7000), sink(b, dst, 7000)
	for _, cc := range []string{"bbr", "cubic"} {
		for _, upload := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/upload=%v", cc, upload), func(b *testing.B) {
				n := int64(rate/8) * 3
				var down, up float64
				for b.Loop() {
					var wg sync.WaitGroup
					var upErr error
					if upload {
						wg.Add(1)
						go func() {
							defer wg.Done()
							d, err := transfer(ctx, mid, dstSink, cc, n)
							upErr = err
							up += float64(n*8) / d.Seconds()
						}()
					}
					d, err := transfer(ctx, src, midSink, cc, n)
					if err != nil {
						b.Fatal(err)
					}
					down += float64(n*8) / d.Seconds()
					wg.Wait()
					if upErr != nil {
						b.Fatal(upErr)
					}
				}
				b.ReportMetric(down/float64(b.N)/float64(rate), "down/cap")
				b.ReportMetric(up/float64(b.N)/float64(rate), "up/cap")
			})
		}
	}
}

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// BenchmarkRelay measures a host that downloads and uploads at once, as every peer of a
// distribution does, to one host or to several: the acknowledgements of its download share its capped uplink with
// its upload. It reports each direction's payload rate over the cap:
// go test -run '^$' -bench Relay -benchtime 1x.
func BenchmarkRelay(b *testing.B) {
	l := newLab(b, "nlrl", "10.213.4.0/24")
	ctx := context.Background()
	const rate = 160 * Mbit
	src := addHost(b, l, "src", Limits{Up: rate, Down: rate})
	mid := addHost(b, l, "mid", Limits{Up: rate, Down: rate})
	midSink := sink(b, mid, 7000)
	var dstSinks []netip.AddrPort
	for i := range 4 {
		dst := addHost(b, l, fmt.Sprintf("dst%d", i), Limits{Up: rate, Down: rate})
		dstSinks = append(dstSinks, sink(b, dst, 7000))
	}
	for _, cc := range []string{"bbr", "cubic"} {
		for _, uploads := range []int{0, 1, 4} {
			b.Run(fmt.Sprintf("%s/uploads=%d", cc, uploads), func(b *testing.B) {
				n := int64(rate/8) * 3
				var down, up float64
				for b.Loop() {
					var (
						wg        sync.WaitGroup
						mu        sync.Mutex
						upErr     error
						upBits    float64
						upLongest time.Duration
					)
					for i := range uploads {
						wg.Add(1)
						go func() {
							defer wg.Done()
							d, err := transfer(ctx, mid, dstSinks[i], cc, n/int64(uploads))
							mu.Lock()
							defer mu.Unlock()
							upErr = errors.Join(upErr, err)
							upBits += float64(n / int64(uploads) * 8)
							upLongest = max(upLongest, d)
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
					if uploads > 0 {
						up += upBits / upLongest.Seconds()
					}
				}
				b.ReportMetric(down/float64(b.N)/float64(rate), "down/cap")
				b.ReportMetric(up/float64(b.N)/float64(rate), "up/cap")
			})
		}
	}
}

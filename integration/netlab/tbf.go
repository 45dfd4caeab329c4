package netlab

import (
	"fmt"
	"time"
)

// The token bucket filter of a capped link. tbf sends a packet when the bucket holds tokens
// for its bytes, queues it (up to limit bytes) when not, and refills the bucket at the rate,
// up to burst bytes. Both sizes decide how accurate the rate is for bulk TCP:
//
//   - burst: tokens the bucket cannot hold are lost, so whenever the sender or the qdisc's
//     timer runs late by more than burst/rate (a busy 2-core CI machine; TCP pacing; BBR's
//     0.75× phases), the link idles for good. With 1 ms of bytes (at least 2 frames), single
//     transfers fell to 0.94× of the cap at 8–100 Mbit/s on a quiet machine and to 0.87–0.95×
//     under load; with 5 ms, and never under 16 KiB (11 frames), they stayed within 0.995–1.004×.
//     The price: after an idle spell a burst at the veth's speed, of 16 KiB or 5 ms of traffic
//     (0.4% of a 4 MB transfer at 8 Mbit/s: why the measured rates end just above 1.0×).
//   - limit: the queue. Loss-based TCP (cubic) fills any queue, so it is the delay a bulk
//     transfer adds to everything else on the link. 50 ms of bytes (plus burst) kept the link
//     busy through losses with cubic and BBR alike; 400 ms (containerdenv's setting) was no
//     more accurate and twice fell to 0.8–0.9× after bursts of losses; 20 ms lost up to 13%
//     with BBR (with a 1 ms burst, under load).
//
// Measured with BenchmarkShaping: one transfer of 2 s (at least 4 MB) per rate, to and from a
// capped host, with bbr and with cubic, 3 runs each, payload rate divided by the most a busy
// link carries (1448 payload bytes per 1514-byte frame, 95.6% of the cap): 0.996–1.004× from
// 8 Mbit/s to 1 Gbit/s.
const (
	tbfBurstTime = 5 * time.Millisecond
	tbfMinBurst  = 16 << 10
	tbfQueueTime = 50 * time.Millisecond
)

// tbfArgs returns tc's arguments for a root tbf of rate bits/s on a link of the given MTU.
func tbfArgs(rate uint64, mtu int) []string {
	frame := uint64(mtu) + 14 // the Ethernet header, which tbf counts
	bytesPerSec := rate / 8
	burst := max(bytesPerSec*uint64(tbfBurstTime)/uint64(time.Second), tbfMinBurst, 4*frame)
	limit := bytesPerSec*uint64(tbfQueueTime)/uint64(time.Second) + burst
	return []string{"root", "tbf", "rate", fmt.Sprintf("%dbit", rate), "burst", fmt.Sprint(burst), "limit", fmt.Sprint(limit)}
}

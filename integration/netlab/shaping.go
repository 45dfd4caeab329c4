package netlab

import (
	"fmt"
	"time"
)

// The shaper of a capped link: an htb class of the link's rate with two leaves, one for pure
// TCP acknowledgements and other small packets, served first, and one for everything else.
//
// Why two: a host of a distribution downloads and uploads at once, and the acknowledgements
// of its download leave on its capped uplink. Behind one FIFO (a plain tbf) they wait in the
// upload's queue and are dropped with it: with four bulk uploads under BBR the download fell
// to 0.65× of its cap (BenchmarkRelay). Real hosts do not do that: Linux's default qdiscs
// (fq_codel, fq) serve sparse flows such as an acknowledgement stream ahead of bulk ones.
// fq_codel, fq, prio and sfq are not in this kernel; htb and a u32 filter are, and give the
// same effect: with them the download keeps 0.95× of its cap in BenchmarkRelay.
//
// The sizes decide how accurate the rate is for bulk TCP:
//
//   - burst: tokens the bucket cannot hold are lost, so whenever the sender or the qdisc's
//     timer runs late by more than burst/rate (a busy 2-core CI machine; TCP pacing; BBR's
//     0.75× phases), the link idles for good. With 1 ms of bytes (at least 2 frames), single
//     transfers fell to 0.94× of the cap at 8–100 Mbit/s on a quiet machine and to 0.87–0.95×
//     under load; with 5 ms, and never under 16 KiB (11 frames), they stayed within 0.995–1.004×.
//     The price: after an idle spell a burst at the veth's speed, of 16 KiB or 5 ms of traffic
//     (0.4% of a 4 MB transfer at 8 Mbit/s: why the measured rates end just above 1.0×).
//   - limit: the bulk queue. Loss-based TCP (cubic) fills any queue, so it is the delay a bulk
//     transfer adds to everything else on the link. 50 ms of bytes (plus burst, and at least
//     two offload packets: shapeMinQueue) kept the link
//     busy through losses with cubic and BBR alike; 400 ms (containerdenv's setting) was no
//     more accurate and twice fell to 0.8–0.9× after bursts of losses; 20 ms lost up to 13%
//     with BBR (with a 1 ms burst, under load).
//
// Measured with BenchmarkShaping (go test -run '^$' -bench Shaping -benchtime 2x): one
// transfer of 2 s (at least 4 MB) per rate, to and from a capped host, with bbr and with
// cubic, payload rate over the cap: 0.957–0.964 from 8 Mbit/s to 1 Gbit/s, where a link busy
// all the time carries 0.956 (1448 payload bytes in each 1514-byte frame). BenchmarkRelay, a
// host downloading while it uploads to one or four others: 0.954–0.957 both ways.
const (
	shapeBurstTime = 5 * time.Millisecond
	shapeMinBurst  = 16 << 10
	shapeQueueTime = 50 * time.Millisecond
	// shapeMinQueue: htb, unlike tbf, does not split a segmentation-offload packet (up to
	// 64 KiB), so a queue of fewer than two of them drops every other one: a BBR upload at
	// 8 Mbit/s (50 ms: 50 KB) crawled at 0.07× of the cap.
	shapeMinQueue = 128 << 10
	// smallPacket: IPv4 packets shorter than this (a TCP acknowledgement with timestamps and
	// SACK blocks is 52–84 bytes) go to the priority leaf.
	smallPacket = 128
	// smallShare is the part of the rate the small packets' leaf is guaranteed; it borrows
	// up to the whole rate, and the bulk leaf borrows whatever it leaves.
	smallShare = 20
)

// shapeCommands returns the tc commands (without "tc -n NS") that cap the egress of dev at
// rate bits/s on a link of the given MTU; the caller removes any root qdisc first.
func shapeCommands(dev string, rate uint64, mtu int) [][]string {
	frame := uint64(mtu) + 14 // the Ethernet header, which htb counts
	bytesPerSec := rate / 8
	burst := max(bytesPerSec*uint64(shapeBurstTime)/uint64(time.Second), shapeMinBurst, 4*frame)
	limit := max(bytesPerSec*uint64(shapeQueueTime)/uint64(time.Second), shapeMinQueue) + burst
	bits := func(r uint64) string { return fmt.Sprintf("%dbit", r) }
	class := func(parent, id string, r uint64, extra ...string) []string {
		return append([]string{"class", "add", "dev", dev, "parent", parent, "classid", id, "htb",
			"rate", bits(r), "ceil", bits(rate), "burst", fmt.Sprint(burst), "cburst", fmt.Sprint(burst),
			"quantum", fmt.Sprint(frame)}, extra...)
	}
	small := max(rate/smallShare, 8)
	return [][]string{
		{"qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20"},
		class("1:", "1:1", rate),
		class("1:1", "1:10", small, "prio", "0"),
		class("1:1", "1:20", rate-small, "prio", "1"),
		{"qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "bfifo", "limit", fmt.Sprint(burst)},
		{"qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "bfifo", "limit", fmt.Sprint(limit)},
		// IPv4 (the lab has no IPv6) whose total length, bytes 2–3 of the header, is under
		// smallPacket.
		{"filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
			"match", "u16", "0", fmt.Sprintf("0x%x", 0xffff&^(smallPacket-1)), "at", "2", "flowid", "1:10"},
	}
}

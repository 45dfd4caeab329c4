// Package netlab builds a network of several hosts on one machine for tests and benchmarks
// of P2P distribution: each host is a network namespace with its own upload and download
// bandwidth cap, all hosts share one Ethernet segment, and the test process itself (the
// driver) reaches every host directly. It needs root and iproute2 (ip, tc).
//
// # Topology
//
// A lab L on the subnet 10.213.1.0/24 with hosts a and b:
//
//	root namespace: the driver (the test process), not capped
//	  L-drv 10.213.1.1/24
//	    │ veth
//	┌───┴─────────────── namespace L-switch ───────────────┐
//	│ drv ─┬─ br0 (bridge)                                 │
//	│      ├─ Lh1 ── htb: a's Down                         │
//	│      └─ Lh2 ── htb: b's Down                         │
//	└────────┼──────────────┼──────────────────────────────┘
//	         │ veth         │ veth
//	 namespace L-a       namespace L-b
//	  eth0 10.213.1.2     eth0 10.213.1.3
//	  htb: a's Up         htb: b's Up
//
// Hosts are numbered from the subnet's second address in the order they are added. The
// driver's link is a plain veth into the bridge, so the driver only adds the route to the
// lab's subnet in the root namespace: no forwarding, no NAT, no other route. Hosts have no
// default route; they reach the driver and each other, nothing else. IPv6 is off on every
// lab link (addrgenmode none), so no router solicitations or MLD reports add to the
// counters.
//
// The bridge lives in its own namespace, not the root one, because of br_netfilter: once
// that module is loaded (it is on the development machines), bridged IPv4 frames go through the
// iptables FORWARD chain of the bridge's namespace whenever
// /proc/sys/net/bridge/bridge-nf-call-iptables is 1, the default, and a FORWARD policy of
// DROP (Docker sets one) would then drop all traffic between hosts. The setting can only
// be turned off for a whole namespace, not for one bridge; New turns it off in L-switch,
// which has no rules anyway, and leaves the root namespace's settings alone. The driver's
// own traffic goes through the root namespace's INPUT and OUTPUT chains like any local
// traffic: a firewall there that drops it breaks the lab.
//
// # Shaping
//
// Limits.Up shapes the egress of the host's eth0; Limits.Down the egress of the host's
// bridge port (Lh1, …), which carries what the other hosts and the driver send to it. Each is
// an htb class of the rate with two leaves: small packets (TCP acknowledgements) are served
// first, as Linux's default fq_codel would serve them, so that a host's uploads do not
// starve the acknowledgements of its downloads; the rest waits in a queue of 50 ms. Rates
// count Ethernet frames, headers included, like a NIC's: bulk TCP over a 1500-byte MTU
// carries 1448 bytes of payload in each 1514-byte frame, 95.6% of the rate. Measured with
// BenchmarkShaping and BenchmarkRelay, bulk transfers with bbr or cubic reach 1.00–1.01× of
// that 95.6% from 8 Mbit/s to 1 Gbit/s, one way or both at once (shaping.go explains the
// choices).
//
// Host.Counters reads the host's eth0 statistics. They count what the kernel hands to the
// device: a large TCP segment that is never split (segmentation offload, which veth keeps)
// counts its headers once, so at high rates the counters fall up to 4% short of the
// frames a real wire would carry; use them for volumes, not for exact rates.
//
// # Processes
//
// Host.Command runs a command in a host (`ip netns exec`); Host.Start runs a daemon there,
// in a process group of its own with its output in a log file, that Process.Stop or
// Process.Kill end as a group. Host.Listen and Host.Dial make sockets of the host in this
// process, so that one test binary can play several hosts.
//
// # Cleanup
//
// Lab.Close kills every process the lab started (whole process groups) and every other
// process still in one of its namespaces, deletes the driver's link and the namespaces,
// which takes the bridge and the hosts' links with them, and leaves nothing of the lab in
// `ip netns list` or `ip link`. It works after a partial failure and may be called again.
// A test binary that dies takes the daemons it started with it (they get SIGKILL when it
// dies), but not their children nor the namespaces: tests call Sweep(ctx, name) before New
// to remove what an earlier run of the same lab left. Lab names are at most 6 characters
// with no "-", and every object of lab L is called L-… or Lh…, so one lab's Sweep never
// touches another's. Give each test (and each concurrent user of a machine) its own lab
// name and subnet.
package netlab

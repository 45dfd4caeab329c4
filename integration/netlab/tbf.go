package netlab

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// tbfArgs returns tc's arguments for a root tbf of rate bits/s on a link of the given MTU.
func tbfArgs(rate uint64, mtu int) []string {
	frame := uint64(mtu) + 14
	bytesPerSec := rate / 8
	burstTime := envDur("NETLAB_BURST", time.Millisecond)
	minBurst := envU("NETLAB_MINBURST", 2*frame)
	latency := envDur("NETLAB_LATENCY", 100*time.Millisecond)
	burst := max(uint64(float64(bytesPerSec)*burstTime.Seconds()), minBurst)
	limit := uint64(float64(bytesPerSec)*latency.Seconds()) + burst
	return []string{"root", "tbf", "rate", fmt.Sprintf("%dbit", rate), "burst", fmt.Sprint(burst), "limit", fmt.Sprint(limit)}
}

func envDur(k string, d time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

func envU(k string, d uint64) uint64 {
	if v, err := strconv.ParseUint(os.Getenv(k), 10, 64); err == nil {
		return v
	}
	return d
}

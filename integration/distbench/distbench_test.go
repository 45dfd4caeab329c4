package main

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "160mbit", want: 160 * netlab.Mbit},
		{in: "1.5Gbit", want: 1500 * netlab.Mbit},
		{in: "800kbit", want: 800 * netlab.Kbit},
		{in: "1000bit", want: 1000},
		{in: "64000", want: 64000},
		{in: "mbit", bad: true},
		{in: "-1mbit", bad: true},
		{in: "20MBps", bad: true},
	} {
		got, err := parseRate(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseRate(%q) = %d; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestBound(t *testing.T) {
	const mb = 1e6
	for _, tc := range []struct {
		name     string
		f, us    float64
		up, down []float64
		want     float64
	}{
		// Equal caps: the source's upload bounds, whatever N.
		{"equal", 256 * mb, 20 * mb, []float64{20 * mb, 20 * mb, 20 * mb}, []float64{20 * mb, 20 * mb, 20 * mb}, 12.8},
		// A slow downloader.
		{"slow peer", 100 * mb, 20 * mb, []float64{20 * mb, 20 * mb}, []float64{20 * mb, 5 * mb}, 20},
		// Peers that cannot upload: the source sends N copies.
		{"leechers", 100 * mb, 20 * mb, []float64{0, 0, 0, 0}, []float64{50 * mb, 50 * mb, 50 * mb, 50 * mb}, 20},
		// A fast source and slow uploaders: aggregate upload bounds.
		{"aggregate", 100 * mb, 100 * mb, []float64{10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb, 10 * mb}, []float64{1e3 * mb}, 1000.0 / 200},
	} {
		if got := bound(tc.f, tc.us, tc.up, tc.down); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: got %g s; want %g s", tc.name, got, tc.want)
		}
	}
	// 256 MiB at 160 Mbit/s of frames: 19.12 MB/s of payload.
	l := netlab.Limits{Up: 160 * netlab.Mbit, Down: 160 * netlab.Mbit}
	got := linkBound(256<<20, l, []netlab.Limits{l, l, l, l, l, l, l, l})
	if want := float64(256<<20) / (20e6 * 1448 / 1514); math.Abs(got-want) > 1e-9 {
		t.Errorf("linkBound: got %g s; want %g s", got, want)
	}
}

func TestParseLogfmt(t *testing.T) {
	line := `time="2026-11-23T21:55:35Z" level=info msg="seeded layer" MBps=22 blob="sha256:d6c9" blocks=49 bytes=50333184 duration=2.241337545s entries=2 host="10.213.9.2:5000" note="a \"quoted\" word"`
	f := parseLogfmt(line)
	for k, want := range map[string]string{
		"msg": "seeded layer", "duration": "2.241337545s", "bytes": "50333184", "host": "10.213.9.2:5000", "note": `a "quoted" word`,
	} {
		if f[k] != want {
			t.Errorf("field %s: got %q; want %q", k, f[k], want)
		}
	}

	path := filepath.Join(t.TempDir(), "d.log")
	log := "=== start\n" + line + "\n" +
		`time="x" level=info msg="warmed layer from peers" duration=1m2.5s` + "\n" + line + "\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := logDurations(path, "seeded layer")
	if err != nil || len(ds) != 2 || ds[0] != 2241337545*time.Nanosecond {
		t.Errorf("logDurations: got %v, %v; want two of 2.241337545s", ds, err)
	}
	ds, err = logDurations(path, "warmed layer from peers")
	if err != nil || len(ds) != 1 || ds[0] != 62500*time.Millisecond {
		t.Errorf("logDurations: got %v, %v; want [1m2.5s]", ds, err)
	}
}

func TestProcTicks(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := procTicks(strconv.Itoa(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	c, err := readCPUTimes()
	if err != nil {
		t.Fatal(err)
	}
	if c.total() == 0 || c.busy() > c.total() {
		t.Errorf("got %+v; want a total above zero and busy within it", c)
	}
}

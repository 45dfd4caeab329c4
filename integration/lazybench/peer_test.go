package main

import "testing"

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "100mbit", want: 100_000_000},
		{in: "1gbit", want: 1_000_000_000},
		{in: "1Gbit", want: 1_000_000_000},
		{in: "500kbit", want: 500_000},
		{in: "2.5mbit", want: 2_500_000},
		{in: "1mibit", want: 1 << 20},
		{in: "12500kbps", want: 100_000_000},
		{in: "800bit", want: 800},
		{in: "0", want: 0},
		{in: "100", bad: true},
		{in: "mbit", bad: true},
		{in: "100mb", bad: true},
		{in: "-1mbit", bad: true},
		{in: "0.0001bit", bad: true},
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

func TestRateText(t *testing.T) {
	for in, want := range map[uint64]string{0: "not capped", 1_000_000_000: "1 Gbit/s", 100_000_000: "100 Mbit/s", 2_500_000: "2.500 Mbit/s"} {
		if got := rateText(in); got != want {
			t.Errorf("rateText(%d) = %q; want %q", in, got, want)
		}
	}
}

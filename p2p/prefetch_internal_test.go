package p2p

import (
	"fmt"
	"testing"
)

func TestMatchAny(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		name     string
		want     bool
	}{
		{[]string{"etc/*.conf"}, "etc/a.conf", true},
		{[]string{"etc/*.conf"}, "etc/sub/a.conf", false},
		{[]string{"/usr/lib/**"}, "usr/lib/x/y.so", true},
		{[]string{"usr/lib/**"}, "usr/lib", true},
		{[]string{"usr/lib/**"}, "usr/libexec/a", false},
		{[]string{"a", "b*"}, "bin", true},
		{nil, "a", false},
	} {
		if got := matchAny(tc.patterns, tc.name); got != tc.want {
			t.Errorf("matchAny(%q, %q) = %v; want %v", tc.patterns, tc.name, got, tc.want)
		}
	}
}

func TestBlockPieces(t *testing.T) {
	for _, tc := range []struct {
		spans [][2]int64
		want  string
	}{
		{nil, "[]"},
		{[][2]int64{{5, 6}}, "[[0 10]]"},
		{[][2]int64{{15, 35}, {8, 12}}, "[[0 10] [10 20] [20 30] [30 35]]"},
		{[][2]int64{{20, 20}}, "[]"},
		{[][2]int64{{-5, 3}, {34, 99}}, "[[0 10] [30 35]]"},
	} {
		if got := fmt.Sprint(blockPieces(tc.spans, 10, 35)); got != tc.want {
			t.Errorf("blockPieces(%v) = %s; want %s", tc.spans, got, tc.want)
		}
	}
}

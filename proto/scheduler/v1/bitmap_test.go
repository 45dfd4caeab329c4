package schedulerv1

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestBitmap(t *testing.T) {
	tests := []struct {
		name  string
		size  int   // NewBitmap(size)
		set   []int // Set in order
		clear []int // then Clear in order
		want  []byte
		count int
	}{
		{name: "empty", size: 0, want: nil, count: 0},
		{name: "room only", size: 9, want: []byte{0, 0}, count: 0},
		{name: "bit order: block 0 and 2 are 0x05", size: 8, set: []int{0, 2}, want: []byte{0x05}, count: 2},
		{name: "block 7 is the top bit of byte 0", size: 8, set: []int{7}, want: []byte{0x80}, count: 1},
		{name: "block 8 is bit 0 of byte 1", size: 16, set: []int{8}, want: []byte{0x00, 0x01}, count: 1},
		{name: "set twice", size: 8, set: []int{3, 3}, want: []byte{0x08}, count: 1},
		{name: "set grows", size: 0, set: []int{17}, want: []byte{0, 0, 0x02}, count: 1},
		{name: "set grows a short bitmap", size: 8, set: []int{1, 9}, want: []byte{0x02, 0x02}, count: 2},
		{name: "all of 10 blocks", size: 10, set: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, want: []byte{0xff, 0x03}, count: 10},
		{name: "clear", size: 16, set: []int{1, 2, 9}, clear: []int{2, 9}, want: []byte{0x02, 0x00}, count: 1},
		{name: "clear absent and out of range", size: 8, set: []int{4}, clear: []int{5, 64, -1}, want: []byte{0x10}, count: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBitmap(tt.size)
			for _, i := range tt.set {
				b.Set(i)
			}
			for _, i := range tt.clear {
				b.Clear(i)
			}
			if got := []byte(b); !bytes.Equal(got, tt.want) {
				t.Errorf("got bytes %#v; want %#v", got, tt.want)
			}
			if got := b.Count(); got != tt.count {
				t.Errorf("got Count() %d; want %d", got, tt.count)
			}
			for i := -1; i < 8*len(b)+9; i++ {
				want := false
				for _, s := range tt.set {
					want = want || s == i
				}
				for _, c := range tt.clear {
					want = want && c != i
				}
				if got := b.Has(i); got != want {
					t.Errorf("got Has(%d) %v; want %v", i, got, want)
				}
			}
		})
	}
}

// TestBitmapWire checks that a bitmap sent in a message field is received as the same set.
func TestBitmapWire(t *testing.T) {
	sent := NewBitmap(20)
	for _, i := range []int{0, 5, 19} {
		sent.Set(i)
	}
	data, err := proto.Marshal(&CandidateParent{PeerId: "p", HeldBitmap: sent})
	if err != nil {
		t.Fatal(err)
	}
	var msg CandidateParent
	if err := proto.Unmarshal(data, &msg); err != nil {
		t.Fatal(err)
	}
	got := Bitmap(msg.GetHeldBitmap())
	for i := 0; i < 24; i++ {
		if want := i == 0 || i == 5 || i == 19; got.Has(i) != want {
			t.Errorf("got Has(%d) %v; want %v", i, got.Has(i), want)
		}
	}
	if got, want := got.Count(), 3; got != want {
		t.Errorf("got Count() %d; want %d", got, want)
	}
}

func TestBitmapSetNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("got no panic for Set(-1); want one")
		}
	}()
	var b Bitmap
	b.Set(-1)
}

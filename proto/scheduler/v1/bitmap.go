package schedulerv1

import "math/bits"

// Bitmap is a set of block indexes in the wire form of every *_bitmap field of this API:
// block i is bit (i mod 8) of byte i/8, least significant bit first. A bitmap may be shorter
// than the task's block count needs: the missing bytes are all zero.
//
// Convert a received field with Bitmap(msg.HeldBitmap) and send []byte(b). A Bitmap is not
// safe for concurrent use when one of the users calls Set or Clear.
type Bitmap []byte

// NewBitmap returns an empty bitmap with room for blocks 0 to n-1.
func NewBitmap(n int) Bitmap {
	if n <= 0 {
		return nil
	}
	return make(Bitmap, (n+7)/8)
}

// Has reports whether block i is in b. A negative index or one beyond b's length is not.
func (b Bitmap) Has(i int) bool {
	if i < 0 || i/8 >= len(b) {
		return false
	}
	return b[i/8]&(1<<(i%8)) != 0
}

// Set adds block i to b, growing b when i is beyond its length. It panics if i is negative.
// Callers bound i by the task's block count before calling it with untrusted input.
func (b *Bitmap) Set(i int) {
	if i < 0 {
		panic("schedulerv1: negative block index")
	}
	if n := i/8 + 1; n > len(*b) {
		*b = append(*b, make(Bitmap, n-len(*b))...)
	}
	(*b)[i/8] |= 1 << (i % 8)
}

// Clear removes block i from b; it does nothing if i is not in b.
func (b Bitmap) Clear(i int) {
	if i < 0 || i/8 >= len(b) {
		return
	}
	b[i/8] &^= 1 << (i % 8)
}

// Count returns the number of blocks in b.
func (b Bitmap) Count() int {
	n := 0
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return n
}

package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

const task = layer.TaskID("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Op: OpBlock, Task: task, Index: 0},
		{Op: OpBlock, Task: task, Index: 1<<32 - 1, Wait: 1500 * time.Millisecond},
		{Op: OpTable, Task: task, Index: 7, Wait: time.Minute},
	} {
		var b bytes.Buffer
		if err := WriteRequest(&b, r); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRequest(bufio.NewReader(&b))
		if err != nil {
			t.Fatal(err)
		}
		if got != r {
			t.Errorf("got %+v, want %+v", got, r)
		}
	}
}

func TestReadRequestRefusesBadInput(t *testing.T) {
	good := func() []byte {
		var b bytes.Buffer
		WriteRequest(&b, Request{Op: OpBlock, Task: task, Index: 3})
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"empty", func([]byte) []byte { return nil }, io.EOF},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrMalformed},
		{"bad version", func(b []byte) []byte { b[4] = 9; return b }, ErrMalformed},
		{"bad op", func(b []byte) []byte { b[5] = 0; return b }, ErrMalformed},
		{"zero task length", func(b []byte) []byte { b[6], b[7] = 0, 0; return b }, ErrMalformed},
		{"huge task length", func(b []byte) []byte { b[6], b[7] = 0xff, 0xff; return b }, ErrMalformed},
		{"bad task id", func(b []byte) []byte { b[8] = 'X'; return b }, ErrMalformed},
		{"truncated", func(b []byte) []byte { return b[:len(b)-3] }, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadRequest(bufio.NewReader(bytes.NewReader(tc.edit(good()))))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	h := ResponseHeader{Status: StatusBusy, State: State{FreeSlots: 3, UploadRate: 20 << 20, Load: 0.25}}
	payload := []byte("hello")
	h.Length = len(payload)
	var b bytes.Buffer
	if err := WriteResponse(&b, h, payload); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResponseHeader(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Errorf("got %+v, want %+v", got, h)
	}
	if rest, _ := io.ReadAll(&b); !bytes.Equal(rest, payload) {
		t.Errorf("payload %q", rest)
	}
}

func TestTablePartRoundTrip(t *testing.T) {
	for _, p := range []TablePart{
		{Total: 0, From: 0, Digests: []layer.BlockDigest{}},
		{Total: 0, Complete: true, Digests: []layer.BlockDigest{}},
		{Total: 10, From: 4, Digests: []layer.BlockDigest{layer.DigestBlock([]byte("a")), layer.DigestBlock([]byte("b"))}},
		{Total: 2, Complete: true, From: 0, Digests: []layer.BlockDigest{layer.DigestBlock(nil), layer.DigestBlock([]byte("x"))}},
	} {
		got, err := ParseTablePart(AppendTablePart(nil, p))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("got %+v, want %+v", got, p)
		}
	}
	bad := AppendTablePart(nil, TablePart{Total: 1, From: 0, Digests: []layer.BlockDigest{{}, {}}})
	if _, err := ParseTablePart(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("more digests than blocks: got %v, want ErrMalformed", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	var b bytes.Buffer
	WriteRequest(&b, Request{Op: OpTable, Task: task, Index: 5, Wait: time.Second})
	f.Add(b.Bytes())
	f.Add([]byte("P2PB\x01\x01\x00\x01x"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteRequest(&out, r); err != nil {
			t.Fatalf("a request that decoded does not encode: %v", err)
		}
		again, err := ReadRequest(bufio.NewReader(&out))
		if err != nil || again != r {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, r)
		}
	})
}

func FuzzParseTablePart(f *testing.F) {
	f.Add(AppendTablePart(nil, TablePart{Total: 3, From: 1, Digests: []layer.BlockDigest{{1}, {2}}}))
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ParseTablePart(in)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendTablePart(nil, p), in) {
			t.Fatalf("a table part that decoded does not encode to its input")
		}
	})
}

func FuzzReadResponseHeader(f *testing.F) {
	var b bytes.Buffer
	WriteResponse(&b, ResponseHeader{Status: StatusOK, State: State{FreeSlots: 1, UploadRate: 5, Load: 0.5}}, []byte("x"))
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ReadResponseHeader(bytes.NewReader(in))
		if err != nil {
			return
		}
		if h.Length < 0 || h.Length > MaxPayload || h.State.Load < 0 || h.State.Load > 1 {
			t.Fatalf("decoded an out-of-range header %+v", h)
		}
	})
}

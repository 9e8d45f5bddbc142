package main

import (
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func timespecBytes(t time.Time) []byte {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts))
}

func TestCmsgTimestamp(t *testing.T) {
	at := time.Date(2026, 12, 3, 8, 0, 0, 123456789, time.UTC)
	other := cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, []byte{1, 0, 0, 0})
	stamp := cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespecBytes(at))
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"alone", stamp, true},
		{"after another message", append(append([]byte{}, other...), stamp...), true},
		{"none", other, false},
		{"empty", nil, false},
		{"cut short", stamp[:len(stamp)-9], false},
		{"header only", stamp[:unix.SizeofCmsghdr], false},
	} {
		got, ok := cmsgTimestamp(tc.b)
		if ok != tc.ok || (ok && !got.Equal(at)) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, ok, at, tc.ok)
		}
	}
}

// FuzzCmsgTimestamp: control data is parsed by hand, so no input may make
// it read out of bounds.
func FuzzCmsgTimestamp(f *testing.F) {
	f.Add(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespecBytes(time.Now())))
	f.Add([]byte{})
	f.Add(make([]byte, unix.SizeofCmsghdr))
	f.Fuzz(func(t *testing.T, b []byte) {
		cmsgTimestamp(b)
	})
}

// TestRxReader reads over a real loopback connection: the timestamp of what
// a read returned lies between the write and the end of the read.
func TestRxReader(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rx, ok := newRxReader(c)
	if !ok {
		t.Fatal("newRxReader declined a TCP connection")
	}
	if !rx.lastRx().IsZero() {
		t.Fatal("a timestamp before the first read")
	}
	// The kernel turns receive timestamps on asynchronously: the first
	// segments may come without one.
	buf := make([]byte, 16)
	for deadline := time.Now().Add(5 * time.Second); rx.lastRx().IsZero(); {
		if time.Now().After(deadline) {
			t.Fatal("no receive timestamp after 5 s of reads")
		}
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rx, buf[:1]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		before := time.Now()
		if _, err := s.Write([]byte("puback")); err != nil {
			t.Fatal(err)
		}
		n, err := io.ReadFull(rx, buf[:6])
		after := time.Now()
		if err != nil || string(buf[:n]) != "puback" {
			t.Fatalf("read %d: %q, %v", i, buf[:n], err)
		}
		if at := rx.lastRx(); at.Before(before.Add(-time.Millisecond)) || at.After(after) {
			t.Errorf("read %d: received at %v, not between the write at %v and the read's end at %v", i, at, before, after)
		}
	}
	s.Close()
	if n, err := rx.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("after the peer closed: %d, %v; want 0, EOF", n, err)
	}
	if _, ok := newRxReader(&net.UnixConn{}); ok {
		t.Error("newRxReader accepted a connection that is not TCP")
	}
}

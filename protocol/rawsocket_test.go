package protocol

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestSocketIO(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rw := SocketIO(a); rw != a {
		t.Errorf("a net.Pipe: got %T, want the connection itself", rw)
	}
	server, _ := unixPair(t)
	if rw, ok := SocketIO(server).(rawSocket); !ok {
		t.Errorf("a Unix socket: got %T, want a rawSocket", rw)
	}
}

func TestRawSocketCarriesMoreThanTheSocketBuffer(t *testing.T) {
	server, client := unixPair(t)
	// Several times a Unix socket's buffer, so that Write finds it full
	// and waits in the network poller for the reader.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	written := make(chan error, 1)
	go func() {
		n, err := SocketIO(client).Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		client.Close()
		written <- err
	}()
	got, err := io.ReadAll(SocketIO(server))
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
}

func TestRawSocketErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, server, client net.Conn)
		op    func(s io.ReadWriter) error
		want  func(error) bool
	}{
		{
			name: "read past the read deadline",
			setup: func(t *testing.T, server, _ net.Conn) {
				mustNil(t, server.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
			},
			op:   func(s io.ReadWriter) error { _, err := s.Read(make([]byte, 8)); return err },
			want: func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) },
		},
		{
			name:  "read after the peer closed",
			setup: func(t *testing.T, _, client net.Conn) { mustNil(t, client.Close()) },
			op:    func(s io.ReadWriter) error { _, err := s.Read(make([]byte, 8)); return err },
			want:  func(err error) bool { return err == io.EOF },
		},
		{
			name:  "read after Close",
			setup: func(t *testing.T, server, _ net.Conn) { mustNil(t, server.Close()) },
			op:    func(s io.ReadWriter) error { _, err := s.Read(make([]byte, 8)); return err },
			want:  func(err error) bool { return errors.Is(err, net.ErrClosed) },
		},
		{
			name:  "write after the peer closed",
			setup: func(t *testing.T, _, client net.Conn) { mustNil(t, client.Close()) },
			op:    func(s io.ReadWriter) error { _, err := s.Write([]byte("x")); return err },
			want:  func(err error) bool { return errors.Is(err, syscall.EPIPE) },
		},
		{
			name: "write past the write deadline, the buffer full",
			setup: func(t *testing.T, server, _ net.Conn) {
				mustNil(t, server.SetWriteDeadline(time.Now().Add(20*time.Millisecond)))
			},
			op:   func(s io.ReadWriter) error { _, err := s.Write(make([]byte, 16<<20)); return err },
			want: func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := unixPair(t)
			s := SocketIO(server)
			tt.setup(t, server, client)
			if err := tt.op(s); !tt.want(err) {
				t.Fatalf("err = %v (%T)", err, err)
			}
		})
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

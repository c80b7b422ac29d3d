package ociapp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ociapp/ociapp"
	"github.com/ociapp/ociapp/internal/benchtest"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/protocol"
)

// The protocol benchmarks run the Go client against the Go SDK server over a
// real Unix socket. BenchmarkRawPingPong is the floor: the same socket
// carrying 4-byte messages with no protocol at all.

func echoHandler() ociapp.Handler {
	return ociapp.NewHandler[echoRequest, echoResponse](ociapp.Func[echoRequest, echoResponse](
		func(_ context.Context, req echoRequest) (echoResponse, error) { return echoResponse(req), nil }))
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, conc := range []int{1, 64} {
		b.Run(concName(conc), func(b *testing.B) {
			path := serveBench(b, echoHandler())
			c, err := protocol.Dial(context.Background(), path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			payload, _ := protocol.EncodePayload(echoRequest{Value: "hello"})
			benchtest.RunConcurrent(b, conc, func() error {
				_, err := c.Call(context.Background(), payload)
				return err
			})
		})
	}
}

func BenchmarkRawPingPong(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 4)
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				return
			}
			if _, err := conn.Write(buf); err != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	benchtest.RunConcurrent(b, 1, pingPong(conn))
	conn.Close()
	ln.Close()
	wg.Wait()
}

// BenchmarkRawPingPongCrossProcess is the floor for anything that crosses
// from one process to another, as every request to a container does: the
// same 4-byte ping-pong with the echo end in a second process.
func BenchmarkRawPingPongCrossProcess(b *testing.B) {
	conn, echo := startPingPongProcess(b)
	benchtest.RunConcurrent(b, 1, pingPong(conn), cpustat.Proc(echo))
}

// BenchmarkRawPingPongRelay is the floor for a request that passes
// through a process between caller and server, as one through a daemon
// in a process of its own does: the 4-byte ping-pong with a relay process
// in the middle, each end reading as it would block, and the same with the
// client polling. Four hops where the cross-process ping-pong has two, and
// each may wake a sleeping process.
func BenchmarkRawPingPongRelay(b *testing.B) {
	for _, polling := range []bool{false, true} {
		name := "blocking"
		if polling {
			name = "client-polling"
		}
		b.Run(name, func(b *testing.B) {
			echoPath := filepath.Join(b.TempDir(), "echo.sock")
			echo := startHelper(b, "OCIAPP_TEST_PINGPONG_SOCKET="+echoPath)
			waitForSocket(b, echoPath)
			relayPath := filepath.Join(b.TempDir(), "relay.sock")
			relay := startHelper(b, "OCIAPP_TEST_RELAY_SOCKET="+relayPath, "OCIAPP_TEST_RELAY_TO="+echoPath)
			conn := dialRetry(b, relayPath)
			roundTrip := pingPong(conn)
			if polling {
				roundTrip = pollingPingPong(b, conn)
			}
			benchtest.RunConcurrent(b, 1, roundTrip, cpustat.Proc(relay), cpustat.Proc(echo))
		})
	}
}

// BenchmarkRawPingPongCrossProcessPolling is the same ping-pong with the
// client polling its socket instead of sleeping until the reply arrives,
// as the protocol client does while it awaits a response: the floor for a
// polling client.
func BenchmarkRawPingPongCrossProcessPolling(b *testing.B) {
	conn, echo := startPingPongProcess(b)
	benchtest.RunConcurrent(b, 1, pollingPingPong(b, conn), cpustat.Proc(echo))
}

// pollingPingPong returns one 4-byte round trip on conn that reads the
// reply with non-blocking reads until it is all there.
func pollingPingPong(b *testing.B, conn net.Conn) func() error {
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4)
	return func() error {
		if _, err := conn.Write(buf); err != nil {
			return err
		}
		for got := 0; got < len(buf); {
			var n int
			var readErr error
			if err := raw.Read(func(fd uintptr) bool {
				n, readErr = syscall.Read(int(fd), buf[got:])
				return true
			}); err != nil {
				return err
			}
			switch {
			case readErr == syscall.EAGAIN || readErr == syscall.EINTR:
			case readErr != nil:
				return readErr
			case n == 0:
				return io.ErrUnexpectedEOF
			}
			got += max(n, 0)
		}
		return nil
	}
}

// BenchmarkRoundTripCrossProcess is the protocol round trip at c1 with the
// Go SDK's echo server in a second process, served as a container serves
// it (serve, one thread): with the protocol client, whose callers poll for
// their own responses (docs/protocol.md, Busy polling); the same with the
// client process on one thread; and with the calling goroutine reading its
// response in a blocking read (raw frames, no client), which the client
// should beat.
func BenchmarkRoundTripCrossProcess(b *testing.B) {
	payload, _ := protocol.EncodePayload(echoRequest{Value: "hello"})
	for _, procs := range []int{0, 1} {
		name := "client"
		if procs > 0 {
			name += fmt.Sprintf(",GOMAXPROCS=%d", procs)
		}
		b.Run(name, func(b *testing.B) {
			path, echo := startEchoProcess(b)
			c, err := protocol.Dial(context.Background(), path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if procs > 0 {
				defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(procs))
			}
			benchtest.RunConcurrent(b, 1, func() error {
				_, err := c.Call(context.Background(), payload)
				return err
			}, cpustat.Proc(echo))
		})
	}
	b.Run("caller-reads", func(b *testing.B) {
		path, echo := startEchoProcess(b)
		conn, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		var id protocol.ID
		var frame []byte
		benchtest.RunConcurrent(b, 1, func() error {
			id[15]++
			frame = protocol.AppendRequestFrame(frame[:0], protocol.Request{ID: id, Payload: payload})
			if _, err := conn.Write(frame); err != nil {
				return err
			}
			body, err := protocol.ReadFrame(r, protocol.DefaultMaxFrameSize)
			if err != nil {
				return err
			}
			_, err = protocol.DecodeResponse(body)
			return err
		}, cpustat.Proc(echo))
	})
}

// startEchoProcess runs the echo server in a second process and returns
// its socket and process id, once it listens.
func startEchoProcess(b *testing.B) (string, int) {
	path := filepath.Join(b.TempDir(), "echo.sock")
	pid := startHelper(b, "OCIAPP_TEST_ECHO_SOCKET="+path)
	waitForSocket(b, path)
	return path, pid
}

// pingPong returns one blocking 4-byte round trip on conn.
func pingPong(conn net.Conn) func() error {
	buf := make([]byte, 4)
	return func() error {
		if _, err := conn.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(conn, buf)
		return err
	}
}

// startPingPongProcess starts this test binary as a 4-byte echo server in
// another process and returns a connection to it and the process's ID.
func startPingPongProcess(b *testing.B) (net.Conn, int) {
	path := filepath.Join(b.TempDir(), "raw.sock")
	pid := startHelper(b, "OCIAPP_TEST_PINGPONG_SOCKET="+path)
	return dialRetry(b, path), pid
}

// startHelper starts this test binary with env added (TestMain serves
// what it names), and returns its process ID. When the benchmark ends the
// process is sent SIGTERM, and killed if it has not exited 5 s later.
func startHelper(b *testing.B, env ...string) int {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd.Process.Pid
}

// dialRetry connects to the Unix socket at path once a helper listens on it.
// Its cleanup, registered after the helper's, runs first: a helper exits
// when its connection ends.
func dialRetry(b *testing.B, path string) net.Conn {
	var conn net.Conn
	untilListening(b, path, func() (err error) {
		conn, err = net.Dial("unix", path)
		return err
	})
	b.Cleanup(func() { conn.Close() })
	return conn
}

// waitForSocket waits until a helper has created its socket at path.
func waitForSocket(b *testing.B, path string) {
	untilListening(b, path, func() error {
		_, err := os.Stat(path)
		return err
	})
}

// untilListening calls try until it succeeds, every 5 ms for up to 10 s:
// the time a helper process has to listen on path.
func untilListening(b *testing.B, path string, try func() error) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("nothing listened on %s: %v", path, err)
		}
	}
}

// relayPingPong passes 4-byte messages from one connection at path to
// upstream and the answers back, then returns the process's exit status.
func relayPingPong(path, upstream string) int {
	up, err := net.Dial("unix", upstream)
	if err != nil {
		return 1
	}
	defer up.Close()
	return serveOneConn(path, func(buf []byte) error {
		if _, err := up.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(up, buf)
		return err
	})
}

// servePingPong echoes 4-byte messages on one connection at path, then
// returns the process's exit status.
func servePingPong(path string) int {
	return serveOneConn(path, func([]byte) error { return nil })
}

// serveOneConn answers the 4-byte messages of one connection at path with
// what answer leaves in their place, then returns the process's exit
// status: 0 when the connection ended, 1 when answer failed.
func serveOneConn(path string, answer func(buf []byte) error) int {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return 1
	}
	defer ln.Close()
	conn, err := ln.Accept()
	if err != nil {
		return 1
	}
	defer conn.Close()
	buf := make([]byte, 4)
	for {
		if _, err := io.ReadFull(conn, buf); err != nil {
			return 0
		}
		if err := answer(buf); err != nil {
			return 1
		}
		if _, err := conn.Write(buf); err != nil {
			return 0
		}
	}
}

func concName(c int) string {
	if c == 1 {
		return "c1"
	}
	return "c64"
}

func serveBench(b *testing.B, h ociapp.Handler) string {
	path := filepath.Join(b.TempDir(), "app.sock")
	ln, err := ociapp.Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&ociapp.Server{Handler: h, BusyPoll: protocol.DefaultBusyPoll}).Serve(ctx, ln)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return path
}

// BenchmarkStreamItems reads one stream of b.N small items: the cost of an
// item, credit envelopes included, by the window the client grants.
func BenchmarkStreamItems(b *testing.B) {
	for _, window := range []int{1, protocol.DefaultStreamWindow, 256} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			path := serveBench(b, newStreamHandler(&streamRecord{ended: make(chan error, 1)}))
			c, err := protocol.Dial(context.Background(), path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			payload, _ := protocol.EncodePayload(streamRequest{Count: b.N})
			b.ReportAllocs()
			b.ResetTimer()
			s, err := c.Stream(context.Background(), payload, window)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for range b.N {
				if _, err := s.Next(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Next(context.Background()); err != io.EOF {
				b.Fatalf("after the items: %v", err)
			}
		})
	}
}

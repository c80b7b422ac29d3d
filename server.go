package ociapp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ociapp/ociapp/protocol"
)

// DefaultGracePeriod is how long a stopping server lets in-flight requests
// finish before cancelling them. It stays below the runtime's default
// shutdown timeout of 10 s, after which the container is killed.
const DefaultGracePeriod = 8 * time.Second

// Server serves a Handler over wire protocol v1. The zero value is not
// usable; Handler is required. Other fields have working zero values.
type Server struct {
	Handler Handler
	// MaxFrameSize bounds request frames; 0 means protocol.DefaultMaxFrameSize.
	MaxFrameSize int
	// GracePeriod bounds draining on shutdown; 0 means DefaultGracePeriod.
	GracePeriod time.Duration
	// Logger receives connection faults and panics; nil discards them.
	Logger *slog.Logger
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ListenAndServe listens on the Unix socket at path and serves until ctx is
// done, then drains. The socket appears at path only once it accepts
// connections: it is bound under a temporary name, made mode 0666 (the
// runtime connects from outside the container's user), and renamed into
// place. A stale socket at path is replaced; the socket is removed on return.
func (s *Server) ListenAndServe(ctx context.Context, path string) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	return s.Serve(ctx, ln)
}

// Listen binds a Unix socket at path the way ListenAndServe does.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o666); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("making socket %s connectable: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("publishing socket %s: %w", path, err)
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("checking socket path %s: %w", path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("socket path %s exists and is not a socket; remove it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// Serve accepts connections on ln until ctx is done. Then it stops
// accepting, stops reading new requests, lets in-flight ones finish for up
// to the grace period, cancels whatever is left, and returns nil. It closes
// ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Handler == nil {
		return errors.New("ociapp: Server.Handler is nil")
	}
	// requests outlives ctx: in-flight work keeps running while draining.
	requests, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()

	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		ln.Close()
	}()
	defer close(stopped)

	var acceptErr error
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("accepting connections: %w", err)
			}
			break
		}
		mu.Lock()
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(requests, conn)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
		}()
	}

	// Stop reading: a past deadline wakes every blocked reader, which then
	// drains its connection's in-flight requests.
	mu.Lock()
	for conn := range conns {
		_ = conn.SetReadDeadline(time.Unix(1, 0))
	}
	mu.Unlock()

	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	grace := s.GracePeriod
	if grace <= 0 {
		grace = DefaultGracePeriod
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		s.logger().Warn("grace period over; cancelling in-flight requests", "grace", grace)
		cancelRequests()
		mu.Lock()
		for conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		<-drained
	}
	return acceptErr
}

// serveConn reads requests from conn and answers each as it completes.
func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer conn.Close()
	w := protocol.NewWriter(conn)
	r := bufio.NewReaderSize(conn, 64<<10)
	// Requests run on reusable workers: a fresh goroutine per request would
	// pay again and again to grow its stack to the depth decoding needs.
	var inflight, workers sync.WaitGroup
	idle := make(chan protocol.Request)
	defer func() {
		close(idle)
		workers.Wait()
	}()
	work := func(req protocol.Request) {
		for ok := true; ok; req, ok = <-idle {
			_ = w.WriteResponse(s.handle(ctx, req)) // a failed write means the peer is gone
			inflight.Done()
		}
	}
	for {
		body, err := protocol.ReadFrame(r, s.MaxFrameSize)
		if err == nil {
			var req protocol.Request
			if req, err = protocol.DecodeRequest(body); err == nil {
				inflight.Add(1)
				select {
				case idle <- req:
				default:
					workers.Add(1)
					go func() {
						defer workers.Done()
						work(req)
					}()
				}
				continue
			}
		}
		var netErr net.Error
		switch {
		case errors.Is(err, io.EOF), errors.As(err, &netErr) && netErr.Timeout():
			// Clean end of input, or the server is stopping: finish what was asked.
		default:
			// Malformed input or a broken connection: nothing more can be
			// answered reliably, so outstanding requests are cancelled.
			s.logger().Warn("closing connection", "err", err)
			cancel()
			conn.Close()
		}
		inflight.Wait()
		return
	}
}

func (s *Server) handle(ctx context.Context, req protocol.Request) (resp protocol.Response) {
	resp.ID = req.ID
	defer func() {
		if v := recover(); v != nil {
			s.logger().Error("panic in Execute", "request_id", req.ID, "panic", v, "stack", string(debug.Stack()))
			resp.Payload, resp.Error = nil, protocol.EncodeError(panicError(v))
		}
	}()
	payload, appErr := s.Handler.Handle(ctx, req.Payload)
	if appErr != nil {
		resp.Error = protocol.EncodeError(appErr)
		return resp
	}
	resp.Payload = payload
	return resp
}

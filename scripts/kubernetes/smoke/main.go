// Command smoke checks that the test cluster of scripts/ensure-kubernetes.sh
// runs pods: inside a pod, "smoke serve DIR" listens on the Unix socket
// DIR/smoke.sock (DIR is a hostPath volume) and answers every connection with
// one line naming the pod; on the host, "smoke dial SOCKET" prints that line.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve DIR | smoke dial SOCKET")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2])
	case "dial":
		err = dial(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q: want serve or dial", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

func serve(dir string) error {
	path := filepath.Join(dir, "smoke.sock")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	host, _ := os.Hostname()
	fmt.Printf("listening on %s as uid %d in pod %s\n", path, os.Getuid(), host)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		ln.Close() // removes the socket file
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		fmt.Fprintf(conn, "ok from pod %s uid %d\n", host, os.Getuid())
		conn.Close()
	}
}

func dial(path string) error {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dialing: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	fmt.Print(line)
	return nil
}

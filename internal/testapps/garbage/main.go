// Command garbage is a test application that speaks no protocol: it
// listens on the app socket and answers every request with bytes that are
// not a valid response frame.
package main

import (
	"fmt"
	"io"
	"net"
	"os"

	"github.com/ociapp/ociapp"
	"github.com/ociapp/ociapp/protocol"
)

func main() {
	ln, err := ociapp.Listen(protocol.DefaultSocketPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	defer conn.Close()
	var header [4]byte
	if _, err := io.ReadFull(conn, header[:]); err != nil {
		return
	}
	fmt.Println("garbage: answering with a frame whose body is not msgpack")
	// A well-framed body that is no envelope: the client must treat it as
	// fatal for the connection.
	_, _ = conn.Write([]byte{0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1})
	_, _ = io.Copy(io.Discard, conn)
}

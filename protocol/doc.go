// Package protocol implements OCIApp wire protocol v1: length-prefixed msgpack
// frames carrying request and response envelopes over a stream socket.
package protocol

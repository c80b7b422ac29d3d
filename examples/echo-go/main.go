// Command echo-go is the echo application in Go: it returns the value it is
// given.
package main

import (
	"context"

	"github.com/ociapp/ociapp"
)

type EchoRequest struct {
	Value string `msgpack:"value"`
}

type EchoResponse struct {
	Value string `msgpack:"value"`
}

type echo struct{}

func (echo) Execute(_ context.Context, req EchoRequest) (EchoResponse, error) {
	return EchoResponse{Value: req.Value}, nil
}

func main() { ociapp.Main[EchoRequest, EchoResponse](echo{}) }

// Command cpuhog is a test application that burns CPU for as many
// iterations as it is told, single-threaded.
package main

import (
	"context"
	"runtime"

	"github.com/ociapp/ociapp"
)

type request struct {
	Iterations int `msgpack:"iterations"`
}

type response struct {
	Result uint64 `msgpack:"result"`
}

func main() {
	// One thread runs Go code, like one Python interpreter: throughput
	// grows with containers, not with requests per container.
	runtime.GOMAXPROCS(1)
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		x := uint64(1)
		for i := range req.Iterations {
			x = x*6364136223846793005 + uint64(i)
		}
		return response{Result: x}, nil
	}))
}

// Command memhog is a test application that allocates (and touches) as many
// megabytes as it is told, to exceed its container's memory limit.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/ociapp/ociapp"
)

type request struct {
	MB int `msgpack:"mb"`
}

type response struct {
	Allocated int `msgpack:"allocated"`
}

func main() {
	var keep [][]byte // kept reachable so the collector cannot free it
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		fmt.Fprintf(os.Stderr, "memhog: allocating %d MiB\n", req.MB)
		for range req.MB {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		return response{Allocated: len(keep)}, nil
	}))
}

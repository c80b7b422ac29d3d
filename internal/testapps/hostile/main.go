// Command hostile is a test application that does what an untrusted app
// might: it reports who it runs as, tries to write to paths (image
// volumes, its socket directory) as much as it can, so tests can check that the sandbox bounds it.
package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct {
	// Fill writes up to this many MiB into the file at Path.
	Fill int    `msgpack:"fill,omitempty"`
	Path string `msgpack:"path,omitempty"`
	// SleepMillis holds the request this long (or until it is canceled);
	// Pad is ballast, sent back in the response when Echo is set.
	SleepMillis int    `msgpack:"sleep_ms,omitempty"`
	Pad         string `msgpack:"pad,omitempty"`
	Echo        bool   `msgpack:"echo,omitempty"`
}

type response struct {
	UID     int    `msgpack:"uid"`
	GID     int    `msgpack:"gid"`
	Groups  []int  `msgpack:"groups"`
	Written int64  `msgpack:"written"`
	Err     string `msgpack:"err"`
	Pad     string `msgpack:"pad"`
}

func main() {
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		select {
		case <-time.After(time.Duration(req.SleepMillis) * time.Millisecond):
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
		r := response{UID: os.Getuid(), GID: os.Getgid()}
		r.Groups, _ = os.Getgroups()
		if req.Echo {
			r.Pad = req.Pad
		}
		if req.Path == "" {
			return r, nil
		}
		r.Written, r.Err = fill(req.Path, req.Fill)
		return r, nil
	}))
}

// fill writes up to mib MiB into path and returns how much it wrote and
// why it stopped early.
func fill(path string, mib int) (int64, string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return 0, err.Error()
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err.Error()
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for range mib {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			return n, err.Error()
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return n, err.Error()
	}
	return n, ""
}

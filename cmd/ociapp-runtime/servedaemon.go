package main

import (
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/ociapp/ociapp/daemon"
)

// daemonFlags are serve's daemon settings as parsed; options turns them
// into the daemon's options.
type daemonFlags struct {
	Listen, StateDir        string
	Token                   string
	TLSCertFile, TLSKeyFile string
	SocketMode              os.FileMode
	MaxArtifactSize         int64
	MaxRequestSize          int64
	MaxBodyMemory           int64
	BodyTimeout             time.Duration
	MinBodyRate             int64 // 0: no rate
	StoreQuota              int64
	UploadTTL, DrainTimeout time.Duration
	Logger                  *slog.Logger
	Ready                   func(net.Addr)
}

func (d daemonFlags) options() []daemon.Option {
	opts := []daemon.Option{
		daemon.WithListen(d.Listen),
		daemon.WithStateDir(d.StateDir),
		daemon.WithSocketMode(d.SocketMode),
		daemon.WithMaxArtifactSize(d.MaxArtifactSize),
		daemon.WithMaxRequestSize(d.MaxRequestSize),
		daemon.WithMaxBodyMemory(d.MaxBodyMemory),
		daemon.WithBodyTimeouts(d.BodyTimeout, d.MinBodyRate),
		daemon.WithDrainTimeout(d.DrainTimeout),
		daemon.WithStoreOptions(daemon.WithStoreQuota(d.StoreQuota), daemon.WithUploadTTL(d.UploadTTL)),
		daemon.WithReady(d.Ready),
	}
	if d.Token != "" {
		opts = append(opts, daemon.WithToken(d.Token))
	}
	if d.TLSCertFile != "" || d.TLSKeyFile != "" {
		opts = append(opts, daemon.WithTLS(d.TLSCertFile, d.TLSKeyFile))
	}
	if d.Logger != nil {
		opts = append(opts, daemon.WithLogger(d.Logger))
	}
	return opts
}

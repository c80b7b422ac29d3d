package runtime

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a runtime's counters, all since New.
type Stats struct {
	// ColdStarts counts containers that started and became ready.
	ColdStarts uint64
	// ImageLoads counts images loaded into the engine (an image the engine
	// already had is not loaded again); ImageRemovals the loaded images
	// removed again once unused.
	ImageLoads    uint64
	ImageRemovals uint64
	// WarmHits counts requests sent at once to a ready container.
	WarmHits uint64
	// QueueWaits counts requests that waited for a container (to start, or
	// to have room); QueueWaitTime is their total wait.
	QueueWaits    uint64
	QueueWaitTime time.Duration
	Failures      FailureStats
	// Streams counts the streams in progress (Stream), and
	// StreamBufferedBytes the size of the items they hold: received from
	// containers and not yet taken by their consumers.
	Streams             int
	StreamBufferedBytes int64
	// Pools has one entry per artifact used, ordered by artifact name.
	Pools []PoolStats
}

// FailureStats counts failed requests by kind, and failed container starts.
type FailureStats struct {
	Artifact   uint64 // *ArtifactError
	Engine     uint64 // *EngineUnavailableError
	Startup    uint64 // requests failed with *StartupError
	Timeout    uint64 // *RequestTimeoutError
	App        uint64 // *AppError
	Crash      uint64 // requests failed with *WorkerCrashError
	Overloaded uint64 // *OverloadedError
	Other      uint64
	// StartupFailures counts containers that failed to start;
	// ContainerCrashes counts containers that crashed while serving.
	StartupFailures  uint64
	ContainerCrashes uint64
}

// PoolStats describes the containers of one artifact.
type PoolStats struct {
	Artifact   string // name and version
	Digest     string // content digest
	Containers int    // ready containers
	Starting   int    // containers being started
	InFlight   int    // requests in flight
	Queued     int    // requests waiting for a container
}

type counters struct {
	coldStarts, imageLoads, imageRemovals, warmHits, queueWaits atomic.Uint64
	queueWaitNanos                                              atomic.Int64

	failArtifact, failEngine, failStartup, failTimeout, failApp, failCrash, failOverloaded, failOther atomic.Uint64
	startupFailures, crashes                                                                          atomic.Uint64
}

// Stats returns a snapshot of the runtime's counters and pools.
func (r *Runtime) Stats() Stats {
	c := &r.stats
	s := Stats{
		ColdStarts:    c.coldStarts.Load(),
		ImageLoads:    c.imageLoads.Load(),
		ImageRemovals: c.imageRemovals.Load(),
		WarmHits:      c.warmHits.Load(),
		QueueWaits:    c.queueWaits.Load(),
		QueueWaitTime: time.Duration(c.queueWaitNanos.Load()),
		Failures: FailureStats{
			Artifact:         c.failArtifact.Load(),
			Engine:           c.failEngine.Load(),
			Startup:          c.failStartup.Load(),
			Timeout:          c.failTimeout.Load(),
			App:              c.failApp.Load(),
			Crash:            c.failCrash.Load(),
			Overloaded:       c.failOverloaded.Load(),
			Other:            c.failOther.Load(),
			StartupFailures:  c.startupFailures.Load(),
			ContainerCrashes: c.crashes.Load(),
		},
	}
	s.Streams, s.StreamBufferedBytes = r.streams.buffered()
	for _, p := range r.poolList() {
		s.Pools = append(s.Pools, p.stats())
	}
	slices.SortFunc(s.Pools, func(a, b PoolStats) int {
		return cmp.Or(cmp.Compare(a.Artifact, b.Artifact), cmp.Compare(a.Digest, b.Digest))
	})
	return s
}

// countFailure counts a failed request by kind and returns err.
func (r *Runtime) countFailure(err error) error {
	c := &r.stats
	switch Classify(err) {
	case KindApp:
		c.failApp.Add(1)
	case KindTimeout:
		c.failTimeout.Add(1)
	case KindCrash:
		c.failCrash.Add(1)
	case KindStartup:
		c.failStartup.Add(1)
	case KindOverloaded:
		c.failOverloaded.Add(1)
	case KindArtifact:
		c.failArtifact.Add(1)
	case KindEngine:
		c.failEngine.Add(1)
	case KindClosed, KindCanceled, KindDeadline:
		// The caller's doing, not a failure of the artifact.
	default:
		c.failOther.Add(1)
	}
	return err
}

package runtime

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ociapp/ociapp/engine"
)

// The engine is not on the data path: requests go over each container's
// socket, and a few seconds without the engine's API must not cost a
// container or leak one. The janitor remembers the containers whose
// removal failed and removes them once the engine answers again; after an
// outage it also removes any container of this runtime that no worker
// knows (one whose create call was lost, say), so that the pools' view and
// the engine's agree.
type janitor struct {
	eng  engine.Engine
	log  *slog.Logger
	inst *instance

	mu      sync.Mutex
	pending map[string]struct{} // container IDs or names to remove
	// outage is set when an engine call failed for want of the engine;
	// the next time every pending removal succeeds, the janitor lists
	// the runtime's containers and removes those no worker knows.
	outage bool
	// live holds the container names of every worker from its creation
	// until its teardown has ended: the containers the runtime knows.
	live map[string]struct{}

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// Retry pacing while the engine is away.
const (
	janitorFirstRetry = 100 * time.Millisecond
	janitorMaxRetry   = 2 * time.Second
)

func newJanitor(eng engine.Engine, log *slog.Logger, inst *instance) *janitor {
	return &janitor{
		eng:     eng,
		log:     log,
		inst:    inst,
		pending: map[string]struct{}{},
		live:    map[string]struct{}{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func (j *janitor) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// track and untrack bracket a worker's container name.
func (j *janitor) track(name string) {
	j.mu.Lock()
	j.live[name] = struct{}{}
	j.mu.Unlock()
}

func (j *janitor) untrack(name string) {
	j.mu.Lock()
	delete(j.live, name)
	j.mu.Unlock()
}

// remove hands over a container whose removal failed.
func (j *janitor) remove(ref string) {
	j.mu.Lock()
	j.pending[ref] = struct{}{}
	j.outage = true
	j.mu.Unlock()
	j.poke()
}

// noteOutage records that the engine could not be reached.
func (j *janitor) noteOutage() {
	j.mu.Lock()
	j.outage = true
	j.mu.Unlock()
	j.poke()
}

// run retries until stopped.
func (j *janitor) run() {
	defer close(j.done)
	retry := janitorFirstRetry
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-j.stop:
			timer.Stop()
			return
		case <-j.wake:
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), diagnosticTimeout)
		clean := j.sweep(ctx)
		cancel()
		if clean {
			retry = janitorFirstRetry
			continue
		}
		timer.Reset(retry)
		retry = min(2*retry, janitorMaxRetry)
	}
}

// sweep tries every pending removal and, after an outage, reconciles. It
// reports whether nothing is left to do.
func (j *janitor) sweep(ctx context.Context) bool {
	j.mu.Lock()
	refs := make([]string, 0, len(j.pending))
	for ref := range j.pending {
		refs = append(refs, ref)
	}
	outage := j.outage
	j.mu.Unlock()
	if len(refs) == 0 && !outage {
		return true
	}
	for _, ref := range refs {
		if err := j.eng.RemoveContainer(ctx, ref); err != nil {
			j.log.Debug("container removal still failing", "container", ref, "err", err)
			return false
		}
		j.mu.Lock()
		delete(j.pending, ref)
		j.mu.Unlock()
		j.log.Info("removed a container after the engine came back", "container", ref)
	}
	if !outage {
		return true
	}
	if err := j.reconcile(ctx, false); err != nil {
		j.log.Debug("reconciling containers with the engine", "err", err)
		return false
	}
	return true
}

// reconcile lists the runtime's containers and removes those no worker
// knows (all of them when all is set, at Close).
func (j *janitor) reconcile(ctx context.Context, all bool) error {
	j.mu.Lock()
	j.outage = false // an outage from now on is noticed again
	j.mu.Unlock()
	fail := func(err error) error {
		j.mu.Lock()
		j.outage = true
		j.mu.Unlock()
		return err
	}
	list, err := j.eng.ListContainers(ctx, map[string]string{LabelInstance: j.inst.id, LabelStateDir: j.inst.stateDir})
	if err != nil {
		return fail(err)
	}
	for _, c := range list {
		j.mu.Lock()
		known := false
		for _, n := range c.Names {
			_, ok := j.live[n]
			known = known || ok
		}
		j.mu.Unlock()
		if known && !all {
			continue
		}
		if err := j.eng.RemoveContainer(ctx, c.ID); err != nil {
			return fail(err)
		}
		j.log.Info("removed a container no worker knew", "container", c.ID, "names", c.Names)
	}
	return nil
}

// drain stops the janitor's loop and, until ctx ends, retries what is
// pending and removes every container of the runtime left in the engine.
func (j *janitor) drain(ctx context.Context) error {
	close(j.stop)
	<-j.done
	retry := janitorFirstRetry
	for {
		sctx, cancel := context.WithTimeout(ctx, diagnosticTimeout)
		clean := j.sweep(sctx)
		if clean {
			clean = j.reconcile(sctx, true) == nil
		}
		cancel()
		if clean {
			return nil
		}
		select {
		case <-ctx.Done():
			j.mu.Lock()
			n := len(j.pending)
			j.mu.Unlock()
			j.log.Warn("could not remove every container before Close ended (is the engine away?); the next runtime removes what is left", "pending_removals", n)
			return ctx.Err()
		case <-time.After(retry):
		}
		retry = min(2*retry, janitorMaxRetry)
	}
}

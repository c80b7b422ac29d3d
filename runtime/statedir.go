package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ociapp/ociapp/engine"
)

// Labels on every container the runtime creates. They let `docker ps
// --filter label=dev.ociapp.runtime` find them and let a later runtime
// clean up after one that crashed.
const (
	LabelManaged        = "dev.ociapp.runtime"
	LabelInstance       = "dev.ociapp.runtime.instance"
	LabelStateDir       = "dev.ociapp.runtime.state-dir"
	LabelArtifactDigest = "dev.ociapp.artifact.digest"
	LabelArtifactName   = "dev.ociapp.artifact.name"
)

// maxSocketPath is the longest socket path a Unix socket address holds
// (108 bytes of sun_path on Linux, including the terminating NUL).
const maxSocketPath = 107

// socketName is the socket's file name inside its directory, which is
// mounted at the directory of protocol.DefaultSocketPath.
const socketName = "app.sock"

// instance is one runtime's directory in the state directory, locked for
// the runtime's lifetime. A directory whose lock nobody holds belongs to a
// runtime that is gone.
type instance struct {
	id       string
	stateDir string
	dir      string
	lock     *os.File
}

func randomID(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// openInstance creates and locks a fresh instance directory. It is made
// under a hidden name and renamed into place once locked, so no other
// runtime ever sees it unlocked.
func openInstance(stateDir string) (*instance, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	id := randomID(4)
	// The longest path under the instance: <state>/<id>/<worker>/app.sock.
	if n := len(filepath.Join(stateDir, id, randomID(4), socketName)); n > maxSocketPath {
		return nil, fmt.Errorf("state directory %s is too long: socket paths under it would be %d bytes, over the %d a Unix socket address holds; choose a shorter one", stateDir, n, maxSocketPath)
	}
	tmp := filepath.Join(stateDir, "."+id+".tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("creating runtime directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(tmp, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(stateDir, id))
	}
	if err != nil {
		if lock != nil {
			_ = lock.Close()
		}
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("creating runtime directory: %w", err)
	}
	return &instance{id: id, stateDir: stateDir, dir: filepath.Join(stateDir, id), lock: lock}, nil
}

// close removes the instance directory and releases its lock.
func (in *instance) close() error {
	unmountSocketDirs(in.dir)
	err := os.RemoveAll(in.dir)
	_ = in.lock.Close()
	return err
}

// unmountSocketDirs detaches the tmpfs socket directories left mounted in
// an instance directory, so that it can be removed; directories that are
// not mount points are left as they are.
func unmountSocketDirs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			_ = syscall.Unmount(filepath.Join(dir, e.Name()), syscall.MNT_DETACH)
		}
	}
}

// tryLockDead reports whether the instance directory dir belongs to a
// runtime that is gone; if so it returns the lock file, held, so that two
// runtimes do not clean up the same directory.
func tryLockDead(dir string) (bool, *os.File) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(dir); statErr != nil {
			return false, nil // removed meanwhile
		}
		return true, nil // every live directory has a lock file
	}
	if err != nil {
		return false, nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return false, nil
	}
	return true, f
}

// staleTmpAge is how old a hidden, half-created instance directory must be
// before it counts as left behind by a crash.
const staleTmpAge = time.Minute

// cleanOrphans removes what runtimes that died without closing left in
// the state directory: their containers and their directories. The
// records kept for every runtime (verifiedDirName) stay.
func (in *instance) cleanOrphans(ctx context.Context, eng engine.Engine, log *slog.Logger) error {
	entries, err := os.ReadDir(in.stateDir)
	if err != nil {
		return fmt.Errorf("reading state directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(in.stateDir, name)
		if !e.IsDir() || name == in.id || name == verifiedDirName {
			continue // not a runtime's directory, or this runtime's
		}
		if strings.HasPrefix(name, ".") {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTmpAge {
				_ = os.RemoveAll(path)
			}
			continue
		}
		dead, lock := tryLockDead(path)
		if !dead {
			continue
		}
		if err := removeInstanceContainers(ctx, eng, in.stateDir, name, log); err != nil {
			if lock != nil {
				_ = lock.Close()
			}
			return err
		}
		unmountSocketDirs(path)
		if err := os.RemoveAll(path); err != nil {
			log.Warn("cannot remove an orphaned runtime directory", "dir", path, "err", err)
		} else {
			log.Info("removed an orphaned runtime directory", "dir", path)
		}
		if lock != nil {
			_ = lock.Close()
		}
	}

	// Containers whose runtime directory is gone altogether (the state
	// directory was wiped, e.g. /run after a reboot).
	list, err := eng.ListContainers(ctx, map[string]string{LabelStateDir: in.stateDir})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range list {
		owner := c.Labels[LabelInstance]
		if owner == in.id || owner == "" || strings.ContainsAny(owner, `/\.`) {
			continue
		}
		// A runtime creates its directory before any container, so a
		// container whose owner has no directory is an orphan.
		if _, err := os.Stat(filepath.Join(in.stateDir, owner)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := eng.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("removing orphaned container %s: %w", c.ID, err)
		}
		log.Info("removed an orphaned container", "container", c.ID, "owner", owner)
	}
	return nil
}

func removeInstanceContainers(ctx context.Context, eng engine.Engine, stateDir, owner string, log *slog.Logger) error {
	list, err := eng.ListContainers(ctx, map[string]string{LabelStateDir: stateDir, LabelInstance: owner})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range list {
		if err := eng.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("removing orphaned container %s: %w", c.ID, err)
		}
		log.Info("removed an orphaned container", "container", c.ID, "owner", owner)
	}
	return nil
}

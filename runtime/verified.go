package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/internal/fileid"
)

// verifiedDirName is the directory of the state directory that holds the
// records of verifiedFiles; cleanOrphans leaves it alone.
const verifiedDirName = "verified"

// verifiedFiles remembers, in the state directory and so across runtimes,
// the artifact files verified before: by file version (fileid.Key), the
// digest of the whole file and of its manifest. A runtime that finds a
// file there reopens it without hashing its layers again
// (artifact.WithVerifiedFile): a daemon restarted on its state directory
// answers its first request on a 60 MB artifact some 150 ms sooner.
//
// Next to them it remembers the numeric user each image config resolved
// to (userResolver), so that a runtime's first container of an image does
// not read the image's layers for its /etc/passwd and /etc/group again.
type verifiedFiles struct {
	dir string
}

// maxVerifiedFiles bounds the records kept, of both kinds; past it they
// are all removed, which costs one more full verification of each file
// still in use and one more resolution of each user.
const maxVerifiedFiles = 4 * maxResolved

func (v verifiedFiles) path(key fileid.Key) string {
	return filepath.Join(v.dir, fmt.Sprintf("%d-%d-%d-%d", key.Dev, key.Ino, key.Size, key.MtimeNano))
}

// lookup returns the file and manifest digests recorded for key.
func (v verifiedFiles) lookup(key fileid.Key) (file, manifest string, ok bool) {
	b, err := os.ReadFile(v.path(key))
	if err != nil {
		return "", "", false
	}
	file, manifest, ok = strings.Cut(strings.TrimSpace(string(b)), " ")
	return file, manifest, ok && strings.HasPrefix(file, "sha256:") && strings.HasPrefix(manifest, "sha256:")
}

// remember records that the version key of a file was verified. A record
// that cannot be written is only a later verification's cost.
func (v verifiedFiles) remember(key fileid.Key, file, manifest string) error {
	return v.write(v.path(key), fmt.Sprintf("%s %s\n", file, manifest))
}

// write writes a record at name. Records are written whole under a
// temporary name and renamed into place, so runtimes sharing the state
// directory never read half of one; past maxVerifiedFiles records, all
// are removed first.
func (v verifiedFiles) write(name, content string) error {
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return err
	}
	if entries, err := os.ReadDir(v.dir); err == nil && len(entries) >= maxVerifiedFiles {
		for _, e := range entries {
			_ = os.Remove(filepath.Join(v.dir, e.Name()))
		}
	}
	f, err := os.CreateTemp(v.dir, ".tmp-")
	if err != nil {
		return err
	}
	_, werr := f.WriteString(content)
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// forget removes key's record; a missing one is not an error.
func (v verifiedFiles) forget(key fileid.Key) { _ = os.Remove(v.path(key)) }

// The user an image's containers run as depends on its config only: its
// User, and the layers (by diff ID) whose /etc/passwd and /etc/group name
// it. A record is kept per config digest and user spec, and holds both, so
// that a record found under a name it does not belong to is ignored. It
// is the user as the image resolves it (artifact.ExecUser), before the
// runtime's policy on root (env.containerUser).

// userPath is where the user that spec resolves to in the image whose
// config has digest config is recorded.
func (v verifiedFiles) userPath(config, spec string) string {
	h := sha256.Sum256([]byte(config + "\x00" + spec))
	return filepath.Join(v.dir, "user-"+hex.EncodeToString(h[:16]))
}

// maxRecordedID is the largest uid or gid a record may hold (runc's
// range, as artifact.ResolveUser checks).
const maxRecordedID = 1<<31 - 1

// lookupUser returns the user recorded for spec in the image whose config
// has digest config; a record that is not whole, or not for them, is not
// found.
func (v verifiedFiles) lookupUser(config, spec string) (artifact.ExecUser, bool) {
	b, err := os.ReadFile(v.userPath(config, spec))
	if err != nil {
		return artifact.ExecUser{}, false
	}
	line, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return artifact.ExecUser{}, false
	}
	gotConfig, rest, _ := strings.Cut(line, " ")
	ids, quoted, _ := strings.Cut(rest, " ")
	gotSpec, err := strconv.Unquote(quoted)
	if err != nil || gotConfig != config || gotSpec != spec {
		return artifact.ExecUser{}, false
	}
	uid, gid, _ := strings.Cut(ids, ":")
	u, uerr := parseRecordedID(uid)
	g, gerr := parseRecordedID(gid)
	if uerr != nil || gerr != nil {
		return artifact.ExecUser{}, false
	}
	return artifact.ExecUser{UID: u, GID: g}, true
}

// parseRecordedID parses a uid or gid as rememberUser writes it.
func parseRecordedID(s string) (int, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a decimal id: %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > maxRecordedID {
		return 0, fmt.Errorf("id %q out of range", s)
	}
	return n, nil
}

// rememberUser records that spec resolves to u in the image whose config
// has digest config. A record that cannot be written is only a later
// resolution's cost.
func (v verifiedFiles) rememberUser(config, spec string, u artifact.ExecUser) error {
	return v.write(v.userPath(config, spec), fmt.Sprintf("%s %d:%d %s\n", config, u.UID, u.GID, strconv.Quote(spec)))
}

// userResolver returns resolve (an artifactInfo's resolveUser, for the
// image config with digest config and User spec) answering from the
// record of a runtime that shared the state directory when there is one,
// and recording its own answer otherwise: one resolution, which reads the
// image's layers, serves every runtime on the state directory. Without a
// resolve or a config digest, resolve is returned as it is.
func (v verifiedFiles) userResolver(config, spec string, resolve func(context.Context) (artifact.ExecUser, error)) func(context.Context) (artifact.ExecUser, error) {
	if resolve == nil || config == "" {
		return resolve
	}
	return func(ctx context.Context) (artifact.ExecUser, error) {
		if u, ok := v.lookupUser(config, spec); ok {
			return u, nil
		}
		u, err := resolve(ctx)
		if err != nil {
			return u, err
		}
		_ = v.rememberUser(config, spec, u)
		return u, nil
	}
}

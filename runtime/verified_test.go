package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/internal/fileid"
	"github.com/ociapp/ociapp/internal/testenv"
)

// userOpener is an openFunc for one artifact whose user, spec, resolves
// to u, counting the resolutions (the reads of the image's layers).
func userOpener(config, spec string, u artifact.ExecUser, resolutions *atomic.Int32) openFunc {
	return func(_ context.Context, path string, _ string) (artifactInfo, error) {
		return artifactInfo{
			Artifact:   Artifact{Path: path, Digest: "sha256:manifest-" + config, ConfigDigest: config},
			User:       spec,
			fileDigest: "sha256:file-" + config,
			resolveUser: func(ctx context.Context) (artifact.ExecUser, error) {
				resolutions.Add(1)
				return u, ctx.Err()
			},
			archive: func(context.Context, io.Writer) error { return nil },
		}, nil
	}
}

// A user resolved by one resolver is read back by the next on the same
// state directory, without resolving it again; another image config, or
// another user of the same config, is resolved and recorded in its turn.
func TestResolverRemembersUser(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.ociapp")
	if err := os.WriteFile(path, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	verified := verifiedFiles{dir: filepath.Join(dir, verifiedDirName)}
	var resolutions atomic.Int32
	steps := []struct {
		name            string
		config, spec    string
		user            artifact.ExecUser // what the layers say
		want            artifact.ExecUser
		wantResolutions int32
	}{
		{name: "first runtime", config: "sha256:one", spec: "app", user: artifact.ExecUser{UID: 1000, GID: 1001}, want: artifact.ExecUser{UID: 1000, GID: 1001}, wantResolutions: 1},
		{name: "second runtime", config: "sha256:one", spec: "app", user: artifact.ExecUser{UID: 7, GID: 7}, want: artifact.ExecUser{UID: 1000, GID: 1001}, wantResolutions: 1},
		{name: "third runtime", config: "sha256:one", spec: "app", user: artifact.ExecUser{UID: 7, GID: 7}, want: artifact.ExecUser{UID: 1000, GID: 1001}, wantResolutions: 1},
		{name: "another user", config: "sha256:one", spec: "app:wheel", user: artifact.ExecUser{UID: 1000, GID: 10}, want: artifact.ExecUser{UID: 1000, GID: 10}, wantResolutions: 2},
		{name: "another config", config: "sha256:two", spec: "app", user: artifact.ExecUser{UID: 0, GID: 0}, want: artifact.ExecUser{UID: 0, GID: 0}, wantResolutions: 3},
		{name: "another config again", config: "sha256:two", spec: "app", user: artifact.ExecUser{UID: 5, GID: 5}, want: artifact.ExecUser{UID: 0, GID: 0}, wantResolutions: 3},
	}
	for _, s := range steps {
		// A new resolver each time: a runtime on the same state directory.
		r := newResolver(userOpener(s.config, s.spec, s.user, &resolutions), verified)
		info, err := r.resolve(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := info.resolveUser(t.Context())
		if err != nil || got != s.want || resolutions.Load() != s.wantResolutions {
			t.Fatalf("%s: got %v, %v after %d resolutions; want %v after %d", s.name, got, err, resolutions.Load(), s.want, s.wantResolutions)
		}
	}
}

// The user is remembered as the image resolves it, and the policy on root
// applied after: a runtime that allows root gets uid 0 from the record of
// one that did not. Across runtimes (New, Prepare, Close) on one state
// directory, the layers are read once.
func TestRuntimeRemembersUser(t *testing.T) {
	const config = "sha256:cfg"
	tests := []struct {
		name        string
		user        artifact.ExecUser
		allowRoot   [2]bool // of the first and the second runtime
		wantUser    [2]string
		wantRecords bool
	}{
		{name: "non-root", user: artifact.ExecUser{UID: 1000, GID: 1001}, wantUser: [2]string{"1000:1001", "1000:1001"}},
		{name: "root, not allowed", user: artifact.ExecUser{}, wantUser: [2]string{NonRootUser, NonRootUser}},
		{name: "root, allowed", user: artifact.ExecUser{}, allowRoot: [2]bool{true, true}, wantUser: [2]string{"0:0", "0:0"}},
		{name: "root, allowed later", user: artifact.ExecUser{}, allowRoot: [2]bool{false, true}, wantUser: [2]string{NonRootUser, "0:0"}},
		{name: "root, no longer allowed", user: artifact.ExecUser{}, allowRoot: [2]bool{true, false}, wantUser: [2]string{"0:0", NonRootUser}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateDir := testenv.ShortTempDir(t)
			path := filepath.Join(t.TempDir(), "a.ociapp")
			if err := os.WriteFile(path, []byte("a"), 0o644); err != nil {
				t.Fatal(err)
			}
			var resolutions atomic.Int32
			for i := range 2 {
				eng := newFakeEngine()
				eng.images[config] = true
				rt, err := New(t.Context(), WithEngine(eng), WithStateDir(stateDir), WithAllowRoot(tt.allowRoot[i]),
					WithLogger(slog.New(slog.DiscardHandler)), withDialer(eng.dial),
					withArtifactOpener(userOpener(config, "app", tt.user, &resolutions)))
				if err != nil {
					t.Fatal(err)
				}
				rep, err := rt.Prepare(t.Context(), path)
				if err != nil {
					t.Fatal(err)
				}
				rt.mu.RLock()
				p := rt.pools[rep.Artifact.Digest]
				rt.mu.RUnlock()
				got := p.user.Load()
				if err := rt.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
				if got == nil || *got != tt.wantUser[i] {
					t.Fatalf("runtime %d runs containers as %v, want %s", i+1, got, tt.wantUser[i])
				}
				if n := resolutions.Load(); n != 1 {
					t.Fatalf("after runtime %d: %d resolutions of the user, want 1", i+1, n)
				}
			}
		})
	}
}

// The real opener's resolution, on an image that names its user: the
// second resolver finds the record under the image's config digest and
// does not read the layers.
func TestOpenArtifactFileRemembersUser(t *testing.T) {
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	passwd := []byte("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
	if err := tw.WriteHeader(&tar.Header{Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(passwd); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, static.NewLayer(layer.Bytes(), types.OCIUncompressedLayer)); err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{User: "app"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.ociapp")
	if err := artifact.WriteFile(t.Context(), path, img, artifact.Metadata{Name: "a", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	verified := verifiedFiles{dir: filepath.Join(dir, verifiedDirName)}
	var resolutions atomic.Int32
	open := func(ctx context.Context, path string, known string) (artifactInfo, error) {
		info, err := openArtifactFile(ctx, path, known)
		if resolve := info.resolveUser; resolve != nil {
			info.resolveUser = func(ctx context.Context) (artifact.ExecUser, error) {
				resolutions.Add(1)
				return resolve(ctx)
			}
		}
		return info, err
	}
	want := artifact.ExecUser{UID: 1000, GID: 1001}
	var config string
	for i := range 2 {
		info, err := newResolver(open, verified).resolve(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		config = info.ConfigDigest
		got, err := info.resolveUser(t.Context())
		if err != nil || got != want || resolutions.Load() != 1 {
			t.Fatalf("resolver %d: got %v, %v after %d resolutions; want %v after 1", i+1, got, err, resolutions.Load(), want)
		}
	}
	if got, ok := verified.lookupUser(config, "app"); !ok || got != want {
		t.Fatalf("record for %s: %v %v", config, got, ok)
	}
}

// A record that is damaged, or not for the config and user it is found
// under, is ignored: the user is resolved and the record rewritten.
func TestUserRecordIgnoredUnlessItsOwn(t *testing.T) {
	const config, spec = "sha256:cfg", "app"
	tests := []struct {
		name   string
		record string
		found  bool // the record is valid: no resolution
	}{
		{name: "valid", record: "sha256:cfg 7:8 \"app\"\n", found: true},
		{name: "empty", record: ""},
		{name: "garbage", record: "garbage"},
		{name: "truncated", record: "sha256:cfg 7:8 \"app\""},
		{name: "half a line", record: "sha256:cfg 7:"},
		{name: "another config", record: "sha256:other 7:8 \"app\"\n"},
		{name: "another user", record: "sha256:cfg 7:8 \"app:wheel\"\n"},
		{name: "unquoted user", record: "sha256:cfg 7:8 app\n"},
		{name: "no group", record: "sha256:cfg 7 \"app\"\n"},
		{name: "negative uid", record: "sha256:cfg -7:8 \"app\"\n"},
		{name: "signed gid", record: "sha256:cfg 7:+8 \"app\"\n"},
		{name: "gid out of range", record: "sha256:cfg 7:2147483648 \"app\"\n"},
		{name: "extra field", record: "sha256:cfg 7:8 \"app\" x\n"},
	}
	resolved := artifact.ExecUser{UID: 1000, GID: 1001}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verifiedFiles{dir: t.TempDir()}
			if err := os.WriteFile(v.userPath(config, spec), []byte(tt.record), 0o600); err != nil {
				t.Fatal(err)
			}
			resolutions := 0
			resolve := v.userResolver(config, spec, func(context.Context) (artifact.ExecUser, error) {
				resolutions++
				return resolved, nil
			})
			want, wantResolutions := resolved, 1
			if tt.found {
				want, wantResolutions = artifact.ExecUser{UID: 7, GID: 8}, 0
			}
			for range 2 {
				got, err := resolve(t.Context())
				if err != nil || got != want || resolutions != wantResolutions {
					t.Fatalf("got %v, %v after %d resolutions; want %v after %d", got, err, resolutions, want, wantResolutions)
				}
			}
			if got, ok := v.lookupUser(config, spec); !ok || got != want {
				t.Fatalf("record reads %v %v, want %v", got, ok, want)
			}
		})
	}
}

// A failed resolution is not recorded, and a context's end is the
// caller's error; without a resolution function or a config digest there
// is nothing to remember.
func TestUserResolverFailures(t *testing.T) {
	v := verifiedFiles{dir: t.TempDir()}
	fail := errors.New("no user \"app\"")
	resolutions := 0
	resolve := v.userResolver("sha256:cfg", "app", func(context.Context) (artifact.ExecUser, error) {
		resolutions++
		return artifact.ExecUser{}, fail
	})
	for range 2 {
		if _, err := resolve(t.Context()); !errors.Is(err, fail) {
			t.Fatalf("got %v, want %v", err, fail)
		}
	}
	if resolutions != 2 {
		t.Fatalf("%d resolutions, want 2: a failure is not recorded", resolutions)
	}
	if _, ok := v.lookupUser("sha256:cfg", "app"); ok {
		t.Fatal("a failure was recorded")
	}
	if v.userResolver("sha256:cfg", "app", nil) != nil {
		t.Fatal("no resolution function became one")
	}
	if _, err := v.userResolver("", "app", func(context.Context) (artifact.ExecUser, error) {
		return artifact.ExecUser{UID: 1}, nil
	})(t.Context()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(v.dir); len(entries) != 0 {
		t.Fatalf("records without a config digest: %v", entries)
	}
}

// However many records of both kinds are written, the directory holds at
// most maxVerifiedFiles; the record just written is always there.
func TestVerifiedRecordsBounded(t *testing.T) {
	tests := []struct {
		name   string
		write  func(v verifiedFiles, i int) error
		readOK func(v verifiedFiles, i int) bool
	}{
		{
			name: "user",
			write: func(v verifiedFiles, i int) error {
				return v.rememberUser(fmt.Sprintf("sha256:%d", i), "app", artifact.ExecUser{UID: i, GID: i})
			},
			readOK: func(v verifiedFiles, i int) bool {
				u, ok := v.lookupUser(fmt.Sprintf("sha256:%d", i), "app")
				return ok && u == artifact.ExecUser{UID: i, GID: i}
			},
		},
		{
			name: "file",
			write: func(v verifiedFiles, i int) error {
				return v.remember(fileKey(i), "sha256:file", "sha256:manifest")
			},
			readOK: func(v verifiedFiles, i int) bool {
				_, _, ok := v.lookup(fileKey(i))
				return ok
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verifiedFiles{dir: t.TempDir()}
			// Records of the other kind, and of this one, up to one short
			// of the bound.
			for i := range maxVerifiedFiles - 3 {
				if err := os.WriteFile(filepath.Join(v.dir, fmt.Sprintf("filler-%d", i)), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 5 {
				if err := tt.write(v, i); err != nil {
					t.Fatal(err)
				}
				entries, err := os.ReadDir(v.dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) > maxVerifiedFiles {
					t.Fatalf("after record %d: %d records, more than %d", i, len(entries), maxVerifiedFiles)
				}
				if !tt.readOK(v, i) {
					t.Fatalf("record %d not read back", i)
				}
				for _, e := range entries {
					if strings.HasPrefix(e.Name(), ".tmp-") {
						t.Fatalf("temporary file %s left", e.Name())
					}
				}
			}
			if entries, _ := os.ReadDir(v.dir); len(entries) >= maxVerifiedFiles {
				t.Fatalf("%d records: the directory was never cleared", len(entries))
			}
		})
	}
}

func fileKey(i int) fileid.Key { return fileid.Key{Dev: 1, Ino: uint64(i), Size: 1, MtimeNano: 1} }

package artifact

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
toor:x:0:0:another root:/root:/bin/sh
app:x:1000:1001::/home/app:/bin/sh
broken line
nobody:x:65534:65534::/:/sbin/nologin
`

const testGroup = `root:x:0:
wheel:x:10:app
app:x:1001:
`

func TestResolveUserIn(t *testing.T) {
	tests := []struct {
		spec    string
		want    ExecUser
		wantErr bool
	}{
		{spec: "", want: ExecUser{0, 0}},
		{spec: "0", want: ExecUser{0, 0}},
		{spec: "00", want: ExecUser{0, 0}},
		{spec: "+0", want: ExecUser{0, 0}},
		{spec: "-0", want: ExecUser{0, 0}},
		{spec: "root", want: ExecUser{0, 0}},
		{spec: "toor", want: ExecUser{0, 0}},
		{spec: "app", want: ExecUser{1000, 1001}},
		{spec: "1000", want: ExecUser{1000, 1001}},
		{spec: "01000", want: ExecUser{1000, 1001}},
		{spec: "app:wheel", want: ExecUser{1000, 10}},
		{spec: "app:0", want: ExecUser{1000, 0}},
		{spec: "4242", want: ExecUser{4242, 0}}, // not listed: numeric, primary group 0
		{spec: "4242:4343", want: ExecUser{4242, 4343}},
		{spec: "65532:65532", want: ExecUser{65532, 65532}},
		{spec: "nosuch", wantErr: true},
		{spec: "app:nosuch", wantErr: true},
		{spec: "-1", wantErr: true},
		{spec: "1:-1", wantErr: true},
		{spec: "4294967296", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ResolveUserIn(tt.spec, []byte(testPasswd), []byte(testGroup))
			if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
				t.Fatalf("ResolveUserIn(%q) = %v, %v; want %v, error %v", tt.spec, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// userArtifact writes an image with the given layers and config user as an
// artifact and opens it.
func userArtifact(t *testing.T, user string, layers ...[]tarFile) *Artifact {
	t.Helper()
	img := testImage(t)
	for _, files := range layers {
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(mktar(t, files), types.OCIUncompressedLayer))
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.User = user
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(t.Context(), saveFile(t, "user.ociapp", writeArtifact(t, img, testMetadata)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The hostile image configs of issue 11, finding 3: users that are uid 0
// without saying "root" or "0", resolved through the image's own files
// across layers, whiteouts and links.
func TestResolveUserFromLayers(t *testing.T) {
	rootAlias := []tarFile{{name: "etc/passwd", data: []byte("admin:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")}}
	tests := []struct {
		name    string
		user    string
		layers  [][]tarFile
		want    ExecUser
		wantErr bool
	}{
		{name: "double zero", user: "00", want: ExecUser{0, 0}},
		{name: "plus zero", user: "+0", want: ExecUser{0, 0}},
		{name: "name of uid 0", user: "admin", layers: [][]tarFile{rootAlias}, want: ExecUser{0, 0}},
		{name: "later layer wins", user: "admin", layers: [][]tarFile{
			rootAlias,
			{{name: "etc/passwd", data: []byte("admin:x:2000:2000::/:/bin/sh\n")}},
		}, want: ExecUser{2000, 2000}},
		{name: "whiteout removes the file", user: "admin", layers: [][]tarFile{
			rootAlias,
			{{name: "etc/.wh.passwd"}},
		}, wantErr: true},
		{name: "opaque directory", user: "admin", layers: [][]tarFile{
			rootAlias,
			{{name: "etc/.wh..wh..opq"}, {name: "etc/group", data: []byte("x:x:1:\n")}},
		}, wantErr: true},
		{name: "symlinked file", user: "admin", layers: [][]tarFile{
			{{name: "usr/lib/passwd", data: []byte("admin:x:0:0::/:/bin/sh\n")}, {name: "etc/passwd", link: "../usr/lib/passwd"}},
		}, want: ExecUser{0, 0}},
		{name: "symlinked directory", user: "admin", layers: [][]tarFile{
			{{name: "real/passwd", data: []byte("admin:x:0:0::/:/bin/sh\n")}, {name: "etc", link: "/real"}},
		}, want: ExecUser{0, 0}},
		{name: "link escaping the root stays inside", user: "admin", layers: [][]tarFile{
			{{name: "passwd", data: []byte("admin:x:0:0::/:/bin/sh\n")}, {name: "etc/passwd", link: "../../../../passwd"}},
		}, want: ExecUser{0, 0}},
		{name: "link loop", user: "admin", layers: [][]tarFile{
			{{name: "etc/passwd", link: "/etc/passwd2"}, {name: "etc/passwd2", link: "/etc/passwd"}},
		}, wantErr: true},
		{name: "numeric needs no files", user: "65532:65532", want: ExecUser{65532, 65532}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := userArtifact(t, tt.user, tt.layers...)
			got, err := a.ResolveUser(t.Context())
			var ue *UserError
			if tt.wantErr {
				if !errors.As(err, &ue) {
					t.Fatalf("got %v, %v; want *UserError", got, err)
				}
				t.Log(err)
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestResolveUserCanceled(t *testing.T) {
	a := userArtifact(t, "app", []tarFile{{name: "etc/passwd", data: []byte("app:x:1:1::/:/bin/sh\n")}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.ResolveUser(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func FuzzResolveUserIn(f *testing.F) {
	f.Add("app:wheel", []byte(testPasswd), []byte(testGroup))
	f.Add("+0", []byte("a:b:c"), []byte(":::"))
	f.Add("00:00", []byte{}, []byte(nil))
	f.Fuzz(func(t *testing.T, spec string, passwd, group []byte) {
		u, err := ResolveUserIn(spec, passwd, group)
		if err == nil && (u.UID < 0 || u.GID < 0) {
			t.Fatalf("negative id %v for %q", u, spec)
		}
	})
}

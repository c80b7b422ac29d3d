package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
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
		{name: "both files behind a linked directory", user: "app:wheel", layers: [][]tarFile{
			{{name: "real/passwd", data: []byte(testPasswd)}, {name: "real/group", data: []byte(testGroup)}, {name: "etc", link: "/real"}},
		}, want: ExecUser{1000, 10}},
		{name: "group linked to passwd", user: "admin:admin", layers: [][]tarFile{
			rootAlias,
			{{name: "etc/group", link: "passwd"}},
		}, want: ExecUser{0, 0}},
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

// imageFileAlone is the lookup of one file as it was before lookups were
// shared (one walk of the layers per link followed): the reference that
// lookupFiles must agree with, name by name.
func imageFileAlone(name string, walk viewFunc) ([]byte, error) {
	for range maxLinkHops {
		parts := strings.Split(name, "/")
		var prefixes []string
		for i := range parts {
			prefixes = append(prefixes, strings.Join(parts[:i+1], "/"))
		}
		view, err := walk(prefixes, []string{name})
		if err != nil {
			return nil, err
		}
		redirected := false
		for i, p := range prefixes {
			n, ok := view[p]
			if !ok {
				if i == len(prefixes)-1 {
					return nil, nil
				}
				continue
			}
			switch n.typ {
			case tar.TypeSymlink:
				target := n.link
				if !path.IsAbs(target) {
					target = path.Join(path.Dir("/"+p), target)
				}
				rest := strings.Join(parts[i+1:], "/")
				name = strings.TrimPrefix(path.Clean("/"+path.Join(target, rest)), "/")
				redirected = true
			case tar.TypeLink:
				if i == len(prefixes)-1 {
					name = strings.TrimPrefix(path.Clean("/"+n.link), "/")
					redirected = true
				}
			case tar.TypeDir:
				if i == len(prefixes)-1 {
					return nil, fmt.Errorf("/%s is a directory", name)
				}
				continue
			default:
				if i == len(prefixes)-1 {
					return n.data, nil
				}
				return nil, nil
			}
			break
		}
		if !redirected {
			return nil, nil
		}
		if name == "" {
			return nil, errors.New("a link resolves to the root directory")
		}
	}
	return nil, fmt.Errorf("more than %d links on the way to /%s", maxLinkHops, name)
}

// countWalks wraps walk to count its calls.
func countWalks(walk viewFunc, n *int) viewFunc {
	return func(paths, want []string) (map[string]node, error) {
		*n++
		return walk(paths, want)
	}
}

// checkAgainstAlone fails unless files and err are what looking each name
// up alone gives: each file's content, or the first name's error.
func checkAgainstAlone(t *testing.T, names []string, walk viewFunc, files [][]byte, err error) {
	t.Helper()
	var wantFiles [][]byte
	var wantErr error
	for _, name := range names {
		data, err := imageFileAlone(name, walk)
		if err != nil {
			wantErr = err
			break
		}
		wantFiles = append(wantFiles, data)
	}
	if wantErr != nil {
		if err == nil || err.Error() != wantErr.Error() {
			t.Fatalf("got error %v, want %v (as alone)", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("got error %v, want the files", err)
	}
	for i := range names {
		if !bytes.Equal(files[i], wantFiles[i]) || (files[i] == nil) != (wantFiles[i] == nil) {
			t.Fatalf("/%s: got %q, want %q (as alone)", names[i], files[i], wantFiles[i])
		}
	}
}

// /etc/passwd and /etc/group are read with one walk of the layers, with
// the result of reading each alone; a link costs another walk only when it
// leads out of what the walk saw.
func TestAccountFilesOneWalk(t *testing.T) {
	passwd := []byte("admin:x:0:0::/:/bin/sh\n")
	group := []byte("admin:x:0:\n")
	tests := []struct {
		name      string
		layers    [][]tarFile
		wantWalks int
	}{
		{name: "plain files", layers: [][]tarFile{{{name: "etc/passwd", data: passwd}, {name: "etc/group", data: group}}}, wantWalks: 1},
		{name: "no files", wantWalks: 1},
		{name: "whiteout of one", layers: [][]tarFile{
			{{name: "etc/passwd", data: passwd}, {name: "etc/group", data: group}},
			{{name: "etc/.wh.group"}},
		}, wantWalks: 1},
		{name: "opaque directory", layers: [][]tarFile{
			{{name: "etc/passwd", data: passwd}, {name: "etc/group", data: group}},
			{{name: "etc/.wh..wh..opq"}, {name: "etc/group", data: []byte("x:x:1:\n")}},
		}, wantWalks: 1},
		{name: "one linked elsewhere", layers: [][]tarFile{
			{{name: "usr/lib/passwd", data: passwd}, {name: "etc/passwd", link: "../usr/lib/passwd"}, {name: "etc/group", data: group}},
		}, wantWalks: 2},
		{name: "directory of both linked", layers: [][]tarFile{
			{{name: "real/passwd", data: passwd}, {name: "real/group", data: group}, {name: "etc", link: "/real"}},
		}, wantWalks: 2},
		{name: "group linked to passwd", layers: [][]tarFile{
			{{name: "etc/passwd", data: passwd}, {name: "etc/group", link: "passwd"}},
		}, wantWalks: 1},
		{name: "group hard-linked to passwd", layers: [][]tarFile{
			{{name: "etc/passwd", data: passwd}, {name: "etc/group", link: "etc/passwd", hard: true}},
		}, wantWalks: 1},
		{name: "link replaced by a later layer", layers: [][]tarFile{
			{{name: "usr/lib/passwd", data: passwd}, {name: "etc/passwd", link: "../usr/lib/passwd"}},
			{{name: "etc/passwd", data: []byte("admin:x:7:7::/:/bin/sh\n")}},
		}, wantWalks: 1},
		{name: "link loop", layers: [][]tarFile{
			{{name: "etc/passwd", link: "/etc/passwd2"}, {name: "etc/passwd2", link: "/etc/passwd"}, {name: "etc/group", data: group}},
		}, wantWalks: maxLinkHops},
		{name: "loop between the two", layers: [][]tarFile{
			{{name: "etc/passwd", link: "group"}, {name: "etc/group", link: "passwd"}},
		}, wantWalks: 1},
	}
	names := []string{"etc/passwd", "etc/group"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := userArtifact(t, "admin", tt.layers...)
			walk := func(paths, want []string) (map[string]node, error) {
				return a.mergedView(t.Context(), paths, want)
			}
			walks := 0
			files, err := lookupFiles(names, countWalks(walk, &walks))
			checkAgainstAlone(t, names, walk, files, err)
			if walks != tt.wantWalks {
				t.Errorf("%d walks of the layers, want %d", walks, tt.wantWalks)
			}
		})
	}
}

// fakeView is a walk of layers whose merged file system is fs: it sees the
// paths asked for, with the content of those wanted, as mergedView does.
func fakeView(fs map[string]node) viewFunc {
	return func(paths, want []string) (map[string]node, error) {
		view := map[string]node{}
		for _, p := range paths {
			if n, ok := fs[p]; ok {
				if !slices.Contains(want, p) {
					n.data = nil
				}
				view[p] = n
			}
		}
		return view, nil
	}
}

// What the layers' tar entries cannot easily say (directories, long
// chains), on a merged file system given whole: the lookups agree with
// lookups alone, errors included, and the first name's error wins.
func TestLookupFilesAsAlone(t *testing.T) {
	file := func(s string) node { return node{typ: tar.TypeReg, data: []byte(s)} }
	symlink := func(to string) node { return node{typ: tar.TypeSymlink, link: to} }
	dir := node{typ: tar.TypeDir}
	chain := func(n int) map[string]node {
		fs := map[string]node{"etc": dir, "etc/group": file("g")}
		for i := range n {
			fs[fmt.Sprintf("l/%d", i)] = symlink(fmt.Sprintf("/l/%d", i+1))
		}
		fs["etc/passwd"] = symlink("/l/0")
		fs[fmt.Sprintf("l/%d", n)] = file("p")
		return fs
	}
	tests := []struct {
		name      string
		fs        map[string]node
		wantWalks int
		wantErr   string
	}{
		{name: "directories", fs: map[string]node{"etc": dir, "etc/passwd": file("p"), "etc/group": file("g")}, wantWalks: 1},
		{name: "passwd is a directory", fs: map[string]node{"etc": dir, "etc/passwd": dir, "etc/group": file("g")}, wantWalks: 1, wantErr: "/etc/passwd is a directory"},
		{name: "the first name's error wins", fs: map[string]node{
			"etc": dir, "etc/passwd": symlink("/x/passwd"), "x/passwd": dir, "etc/group": dir,
		}, wantWalks: 2, wantErr: "/x/passwd is a directory"},
		{name: "link to the root", fs: map[string]node{"etc": dir, "etc/passwd": symlink("/"), "etc/group": file("g")}, wantWalks: 1, wantErr: "root directory"},
		{name: "etc is a file", fs: map[string]node{"etc": file("x")}, wantWalks: 1},
		{name: "etc is a hard link", fs: map[string]node{"etc": {typ: tar.TypeLink, link: "x"}, "x/passwd": file("p")}, wantWalks: 1},
		{name: "links as many as allowed", fs: chain(maxLinkHops - 2), wantWalks: maxLinkHops},
		{name: "one link too many", fs: chain(maxLinkHops - 1), wantWalks: maxLinkHops, wantErr: "more than"},
	}
	names := []string{"etc/passwd", "etc/group"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			walks := 0
			files, err := lookupFiles(names, countWalks(fakeView(tt.fs), &walks))
			checkAgainstAlone(t, names, fakeView(tt.fs), files, err)
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want %q", err, tt.wantErr)
			}
			if walks != tt.wantWalks {
				t.Errorf("%d walks, want %d", walks, tt.wantWalks)
			}
		})
	}
}

// FuzzLookupFilesAsAlone checks shared lookups against lookups alone on
// merged file systems described one entry a line: "dir/" a directory,
// "name>target" a symbolic link, "name=target" a hard link, "name" a file.
func FuzzLookupFilesAsAlone(f *testing.F) {
	f.Add("etc/\netc/passwd\netc/group")
	f.Add("etc>real\nreal/passwd\nreal/group>passwd")
	f.Add("etc/passwd>group\netc/group>passwd")
	f.Add("etc/passwd=etc/group\netc/group>/x/../etc/passwd2\netc/passwd2/")
	f.Fuzz(func(t *testing.T, desc string) {
		fs := map[string]node{}
		for line := range strings.Lines(desc) {
			line = strings.TrimSuffix(line, "\n")
			clean := func(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }
			if name, target, ok := strings.Cut(line, ">"); ok {
				fs[clean(name)] = node{typ: tar.TypeSymlink, link: target}
			} else if name, target, ok := strings.Cut(line, "="); ok {
				fs[clean(name)] = node{typ: tar.TypeLink, link: target}
			} else if strings.HasSuffix(line, "/") {
				fs[clean(line)] = node{typ: tar.TypeDir}
			} else {
				fs[clean(line)] = node{typ: tar.TypeReg, data: []byte(line)}
			}
		}
		names := []string{"etc/passwd", "etc/group"}
		files, err := lookupFiles(names, fakeView(fs))
		checkAgainstAlone(t, names, fakeView(fs), files, err)
	})
}

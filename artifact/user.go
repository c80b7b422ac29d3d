package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// ExecUser is the numeric identity a container of an image runs as.
type ExecUser struct {
	UID, GID int
}

// String is the "uid:gid" form an engine takes as a container's user.
func (u ExecUser) String() string { return strconv.Itoa(u.UID) + ":" + strconv.Itoa(u.GID) }

// UserError means an image's configured user cannot be resolved to a
// numeric uid and gid: a name its /etc/passwd or /etc/group does not list,
// a number out of range, or account files that cannot be read.
type UserError struct {
	Path   string // the artifact file
	User   string // the image config's User
	Reason string
}

func (e *UserError) Error() string {
	return fmt.Sprintf("artifact %s: cannot resolve the image's user %q: %s; set the image's USER to a numeric uid:gid", e.Path, e.User, e.Reason)
}

// Account files are read whole; real ones are a few kilobytes.
const maxAccountFile = 1 << 20

// maxIDValue is the largest uid or gid the engines accept (runc's range).
const maxIDValue = 1<<31 - 1

// ResolveUser resolves the image config's User ("user", "user:group",
// numeric or by name, "" for the image default) to the numeric uid and gid
// the engine would run the container as: names are looked up in the
// image's own /etc/passwd and /etc/group, read from its layers (whiteouts
// and links followed); numbers are parsed as runc parses them, so "00" and
// "+0" are uid 0. The layers are read only when a name or a user's primary
// group must be looked up. Failures are *UserError, or ctx's error.
func (a *Artifact) ResolveUser(ctx context.Context) (ExecUser, error) {
	spec := a.Config.Config.User
	userArg, groupArg, _ := strings.Cut(spec, ":")
	_, uidErr := strconv.Atoi(userArg)
	_, gidErr := strconv.Atoi(groupArg)
	var passwd, group []byte
	if userArg == "" || uidErr != nil || groupArg == "" || gidErr != nil {
		var err error
		passwd, group, err = a.accountFiles(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ExecUser{}, ctx.Err()
			}
			return ExecUser{}, &UserError{Path: a.Path, User: spec, Reason: err.Error()}
		}
	}
	u, err := ResolveUserIn(spec, passwd, group)
	if err != nil {
		return ExecUser{}, &UserError{Path: a.Path, User: spec, Reason: err.Error()}
	}
	return u, nil
}

// ResolveUserIn resolves a container user spec against the content of an
// /etc/passwd and /etc/group (either may be nil), with the rules of runc's
// user lookup, which Docker and containerd use: a numeric user is a uid
// (looked up for its primary group), a name must be listed; an explicit
// group, numeric or by name, replaces the primary group; "" is uid 0.
func ResolveUserIn(spec string, passwd, group []byte) (ExecUser, error) {
	userArg, groupArg, _ := strings.Cut(spec, ":")
	uidArg, uidErr := strconv.Atoi(userArg)
	gidArg, gidErr := strconv.Atoi(groupArg)
	var u ExecUser
	found := false
	if err := eachAccountLine(passwd, func(f []string) bool {
		if len(f) < 4 {
			return true
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return true
		}
		switch {
		case userArg == "":
			found = uid == 0
		case uidErr == nil:
			found = uid == uidArg
		default:
			found = f[0] == userArg
		}
		if found {
			u = ExecUser{UID: uid, GID: gid}
		}
		return !found // the first match wins
	}); err != nil {
		return ExecUser{}, err
	}
	if !found && userArg != "" {
		if uidErr != nil {
			return ExecUser{}, fmt.Errorf("no user %q in the image's /etc/passwd", userArg)
		}
		u = ExecUser{UID: uidArg}
	}
	if groupArg != "" {
		found := false
		if err := eachAccountLine(group, func(f []string) bool {
			if len(f) < 3 {
				return true
			}
			gid, err := strconv.Atoi(f[2])
			if err != nil {
				return true
			}
			if gidErr == nil {
				found = gid == gidArg
			} else {
				found = f[0] == groupArg
			}
			if found {
				u.GID = gid
			}
			return !found
		}); err != nil {
			return ExecUser{}, err
		}
		if !found {
			if gidErr != nil {
				return ExecUser{}, fmt.Errorf("no group %q in the image's /etc/group", groupArg)
			}
			u.GID = gidArg
		}
	}
	if u.UID < 0 || u.UID > maxIDValue || u.GID < 0 || u.GID > maxIDValue {
		return ExecUser{}, fmt.Errorf("uid %d or gid %d is outside 0..%d", u.UID, u.GID, maxIDValue)
	}
	return u, nil
}

// eachAccountLine calls fn with the colon-separated fields of each line of
// an /etc/passwd or /etc/group until fn returns false.
func eachAccountLine(data []byte, fn func(fields []string) bool) error {
	if len(data) > maxAccountFile {
		return fmt.Errorf("account file is %d bytes, more than %d", len(data), maxAccountFile)
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	s.Buffer(make([]byte, 0, 4096), maxAccountFile)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !fn(strings.Split(line, ":")) {
			return nil
		}
	}
	return s.Err()
}

// accountFiles returns the image's /etc/passwd and /etc/group as its
// container would see them; a missing file is nil.
func (a *Artifact) accountFiles(ctx context.Context) (passwd, group []byte, err error) {
	if passwd, err = a.imageFile(ctx, "etc/passwd"); err != nil {
		return nil, nil, err
	}
	if group, err = a.imageFile(ctx, "etc/group"); err != nil {
		return nil, nil, err
	}
	return passwd, group, nil
}

// maxLinkHops bounds the symbolic links followed to find a file.
const maxLinkHops = 16

// imageFile returns the content of the regular file at name (relative to
// the root, cleaned) in the image's merged file system, following symbolic
// links (kept inside the root, as the engine does) and hard links; nil if
// there is none.
func (a *Artifact) imageFile(ctx context.Context, name string) ([]byte, error) {
	for range maxLinkHops {
		// Every directory on the way may be a symbolic link: find the
		// first one and resolve it, then look again.
		parts := strings.Split(name, "/")
		var prefixes []string
		for i := range parts {
			prefixes = append(prefixes, strings.Join(parts[:i+1], "/"))
		}
		view, err := a.mergedView(ctx, prefixes, name)
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
				continue // a directory that layers create implicitly
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
				return nil, nil // a file where a directory should be
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

// node is the state of one path in the merged view of the layers.
type node struct {
	typ  byte
	link string
	data []byte
}

// mergedView applies the image's layers, base first, and returns the final
// state of each of the given paths that exists; the content of want is
// kept when it is a regular file.
func (a *Artifact) mergedView(ctx context.Context, paths []string, want string) (map[string]node, error) {
	img, err := a.Image()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	interesting := make(map[string]bool, len(paths))
	for _, p := range paths {
		interesting[p] = true
	}
	view := map[string]node{}
	// under reports whether p is dir or inside it.
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i, err)
		}
		added := map[string]node{}
		var removed []string // whiteouts: these paths and everything under them
		var opaque []string  // opaque directories: everything under them
		tr := tar.NewReader(&ctxReader{ctx: ctx, r: rc})
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				_ = rc.Close()
				return nil, fmt.Errorf("reading layer %d: %w", i, err)
			}
			p := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
			dir, base := path.Dir(p), path.Base(p)
			if dir == "." {
				dir = ""
			}
			if base == ".wh..wh..opq" {
				opaque = append(opaque, dir)
				continue
			}
			if target, ok := strings.CutPrefix(base, ".wh."); ok {
				removed = append(removed, strings.TrimPrefix(dir+"/"+target, "/"))
				continue
			}
			if !interesting[p] {
				continue
			}
			n := node{typ: hdr.Typeflag, link: hdr.Linkname}
			if n.typ == tar.TypeRegA {
				n.typ = tar.TypeReg
			}
			if p == want && n.typ == tar.TypeReg {
				if hdr.Size > maxAccountFile {
					_ = rc.Close()
					return nil, fmt.Errorf("/%s is %d bytes, more than %d", p, hdr.Size, maxAccountFile)
				}
				if n.data, err = io.ReadAll(tr); err != nil {
					_ = rc.Close()
					return nil, fmt.Errorf("reading layer %d: %w", i, err)
				}
			}
			added[p] = n
		}
		_ = rc.Close()
		for p := range view {
			for _, d := range opaque {
				if d == "" || strings.HasPrefix(p, d+"/") {
					delete(view, p)
				}
			}
			for _, r := range removed {
				if under(p, r) {
					delete(view, p)
				}
			}
		}
		for p, n := range added {
			if n.typ != tar.TypeDir {
				// A file replaces a directory and everything in it.
				for q := range view {
					if strings.HasPrefix(q, p+"/") {
						delete(view, q)
					}
				}
			}
			view[p] = n
		}
	}
	return view, nil
}

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
	"slices"
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
// group must be looked up, and then both files are found in one walk of
// them (another only for a link that leads outside what that walk saw).
// Failures are *UserError, or ctx's error.
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
// container would see them; a missing file is nil. Both are read with one
// walk of the layers (see imageFiles).
func (a *Artifact) accountFiles(ctx context.Context) (passwd, group []byte, err error) {
	files, err := a.imageFiles(ctx, "etc/passwd", "etc/group")
	if err != nil {
		return nil, nil, err
	}
	return files[0], files[1], nil
}

// maxLinkHops bounds the symbolic links followed to find a file.
const maxLinkHops = 16

// imageFiles returns the content of the regular file at each of names
// (relative to the root, cleaned) in the image's merged file system,
// following symbolic links (kept inside the root, as the engine does) and
// hard links; nil for a name where there is none. All the names are looked
// up in one walk of the layers; a link leads to another walk only when
// what it points to was not part of the walk that found it, and then for
// the names still on their way only. The error is that of the first name,
// in order, whose lookup failed, as if each were looked up alone.
func (a *Artifact) imageFiles(ctx context.Context, names ...string) ([][]byte, error) {
	return lookupFiles(names, func(paths, want []string) (map[string]node, error) {
		return a.mergedView(ctx, paths, want)
	})
}

// viewFunc walks the layers for a merged view (see mergedView).
type viewFunc func(paths, want []string) (map[string]node, error)

// lookupFiles is imageFiles with the walk of the layers given.
func lookupFiles(names []string, walk viewFunc) ([][]byte, error) {
	type lookup struct {
		name string
		hops int
		done bool
		err  error
	}
	files := make([][]byte, len(names))
	lookups := make([]lookup, len(names))
	for i, n := range names {
		lookups[i].name = n
	}
	for {
		// The paths of this walk: every directory on the way to each
		// name still looked up, since any of them may be a link.
		var paths, want []string
		seen := map[string]bool{}
		for _, l := range lookups {
			if l.done {
				continue
			}
			want = append(want, l.name)
			for _, p := range pathPrefixes(l.name) {
				if !seen[p] {
					seen[p] = true
					paths = append(paths, p)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		view, err := walk(paths, want)
		if err != nil {
			return nil, err
		}
		// covered reports whether this walk saw what name's lookup needs.
		covered := func(name string) bool {
			if !slices.Contains(want, name) {
				return false // its content was not kept
			}
			for _, p := range pathPrefixes(name) {
				if !seen[p] {
					return false
				}
			}
			return true
		}
		for i := range lookups {
			l := &lookups[i]
			for !l.done {
				data, next, redirected, err := followIn(view, l.name)
				if err != nil || !redirected {
					files[i], l.err, l.done = data, err, true
					break
				}
				l.name = next
				if l.hops++; l.hops >= maxLinkHops {
					l.err, l.done = fmt.Errorf("more than %d links on the way to /%s", maxLinkHops, l.name), true
					break
				}
				if l.name == "" {
					l.err, l.done = errors.New("a link resolves to the root directory"), true
					break
				}
				if !covered(l.name) {
					break // for the next walk
				}
			}
		}
	}
	for _, l := range lookups {
		if l.err != nil {
			return nil, l.err
		}
	}
	return files, nil
}

// pathPrefixes returns the paths of name and of each directory on the way
// to it, the root's first: "etc", "etc/passwd".
func pathPrefixes(name string) []string {
	parts := strings.Split(name, "/")
	prefixes := make([]string, len(parts))
	for i := range parts {
		prefixes[i] = strings.Join(parts[:i+1], "/")
	}
	return prefixes
}

// followIn looks name up in view, a merged view of (at least) name and the
// directories on the way to it. It returns the file's content (nil if
// there is none), or, redirected, the name that the first link met on the
// way leads to, which must be looked up in turn.
func followIn(view map[string]node, name string) (data []byte, next string, redirected bool, err error) {
	parts := strings.Split(name, "/")
	prefixes := pathPrefixes(name)
	for i, p := range prefixes {
		last := i == len(prefixes)-1
		n, ok := view[p]
		if !ok {
			if last {
				return nil, "", false, nil
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
			return nil, strings.TrimPrefix(path.Clean("/"+path.Join(target, rest)), "/"), true, nil
		case tar.TypeLink:
			if last {
				return nil, strings.TrimPrefix(path.Clean("/"+n.link), "/"), true, nil
			}
			return nil, "", false, nil // a hard link where a directory should be
		case tar.TypeDir:
			if last {
				return nil, "", false, fmt.Errorf("/%s is a directory", name)
			}
		default:
			if last {
				return n.data, "", false, nil
			}
			return nil, "", false, nil // a file where a directory should be
		}
	}
	return nil, "", false, nil
}

// node is the state of one path in the merged view of the layers.
type node struct {
	typ  byte
	link string
	data []byte
}

// mergedView applies the image's layers, base first, and returns the final
// state of each of the given paths that exists; the content of those in
// want is kept when they are regular files. paths must hold every
// directory on the way to each of them: the state of a path depends on
// the entries for it and for those directories only, so one view serves
// any number of lookups.
func (a *Artifact) mergedView(ctx context.Context, paths, want []string) (map[string]node, error) {
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
	keep := make(map[string]bool, len(want))
	for _, p := range want {
		keep[p] = true
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
			// archive/tar reports the legacy TypeRegA as TypeReg.
			n := node{typ: hdr.Typeflag, link: hdr.Linkname}
			if keep[p] && n.typ == tar.TypeReg {
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

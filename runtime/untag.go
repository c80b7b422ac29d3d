package runtime

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// An artifact must not name images on the host: a docker load of its file
// as it is would move any tag it lists (manifest.json RepoTags, index.json
// name annotations), e.g. debian:12, onto its own image. The runtime loads
// every image untagged and refers to it by ID.

// nameAnnotations are the index annotations an engine's loader takes an
// image's name from (containerd and Docker's containerd image store).
var nameAnnotations = []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"}

// maxLoadJSON bounds manifest.json and index.json in the load stream.
const maxLoadJSON = 16 << 20

// writeUntagged runs write (which writes a loadable image archive) and
// copies its output to w with every image name removed: manifest.json
// entries lose their RepoTags, index.json entries their name annotations,
// and a legacy "repositories" file is dropped. Errors from write come
// first, since they explain a broken stream.
func writeUntagged(ctx context.Context, w io.Writer, write func(context.Context, io.Writer) error) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := write(ctx, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	err := untagArchive(pr, w)
	if err == nil {
		// Let the writer finish (it checks the file's digest at its end):
		// what follows the tar's end marker is not part of the image.
		_, err = io.Copy(io.Discard, pr)
	}
	// Unblock the writer if the filter stopped early.
	pr.CloseWithError(errors.New("the archive filter stopped reading"))
	if werr := <-done; werr != nil {
		return werr
	}
	return err
}

// untagArchive copies the tar r to w, removing image names. The rewritten
// manifest.json and index.json go last, so that no entry written through a
// linked directory (d -> ., then d/manifest.json) can replace them when a
// loader unpacks the archive to disk; earlier copies are dropped.
func untagArchive(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	rewritten := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the image archive: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		var rewrite func([]byte) ([]byte, error)
		switch name {
		case "repositories":
			continue
		case "manifest.json":
			rewrite = untagManifest
		case "index.json":
			rewrite = untagIndex
		}
		if rewrite == nil {
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("writing the image archive: %w", err)
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("copying %s: %w", hdr.Name, err)
			}
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("%s is not a regular file in the archive", name)
		}
		if hdr.Size > maxLoadJSON {
			return fmt.Errorf("%s is %d bytes, more than %d", name, hdr.Size, maxLoadJSON)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		if rewritten[name], err = rewrite(data); err != nil {
			return fmt.Errorf("removing image names from %s: %w", name, err)
		}
	}
	for _, name := range []string{"index.json", "manifest.json"} {
		data, ok := rewritten[name]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return fmt.Errorf("writing the image archive: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("writing the image archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing the image archive: %w", err)
	}
	return nil
}

// untagManifest removes RepoTags from every entry of a docker-save
// manifest.json. Loaders decode JSON keys case-insensitively, so every
// spelling of the key goes.
func untagManifest(data []byte) ([]byte, error) {
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, err
	}
	for _, e := range entries {
		deleteFold(e, "RepoTags")
	}
	return json.Marshal(entries)
}

// untagIndex removes the name annotations from every entry of an OCI
// index.json (under every spelling of "manifests" and "annotations").
func untagIndex(data []byte) ([]byte, error) {
	var index map[string]json.RawMessage
	if err := json.Unmarshal(data, &index); err != nil {
		return nil, err
	}
	for key, raw := range index {
		if !strings.EqualFold(key, "manifests") {
			continue
		}
		var descs []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &descs); err != nil {
			return nil, err
		}
		for _, d := range descs {
			for akey, araw := range d {
				if !strings.EqualFold(akey, "annotations") {
					continue
				}
				var ann map[string]json.RawMessage
				if err := json.Unmarshal(araw, &ann); err != nil {
					return nil, err
				}
				for _, n := range nameAnnotations {
					delete(ann, n)
				}
				b, err := json.Marshal(ann)
				if err != nil {
					return nil, err
				}
				d[akey] = b
			}
		}
		b, err := json.Marshal(descs)
		if err != nil {
			return nil, err
		}
		index[key] = b
	}
	return json.Marshal(index)
}

func deleteFold(m map[string]json.RawMessage, key string) {
	for k := range m {
		if strings.EqualFold(k, key) {
			delete(m, k)
		}
	}
}

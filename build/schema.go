package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ociapp/ociapp/artifact"
)

// maxSchemaFile bounds the schema document read from an image or a program.
const maxSchemaFile = 8 << 20

// openSaved opens an engine's image export (verifying it like any artifact).
func openSaved(ctx context.Context, saved string) (v1.Image, error) {
	a, err := artifact.Open(ctx, saved)
	if err != nil {
		return nil, fmt.Errorf("reading the exported image: %w", err)
	}
	img, err := a.Image()
	if err != nil {
		return nil, fmt.Errorf("reading the exported image: %w", err)
	}
	return img, nil
}

// findFile returns the content of the file at name in img's filesystem,
// looking from the top layer down.
func findFile(img v1.Image, name string) ([]byte, error) {
	want := strings.TrimPrefix(path.Clean(name), "/")
	whiteout := path.Join(path.Dir(want), ".wh."+path.Base(want))
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for i := len(layers) - 1; i >= 0; i-- {
		data, found, err := fileInLayer(layers[i], want, whiteout)
		if err != nil || found {
			return data, err
		}
	}
	return nil, errors.New("no such file in the image")
}

func fileInLayer(l v1.Layer, want, whiteout string) ([]byte, bool, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		switch strings.TrimPrefix(path.Clean("/"+hdr.Name), "/") {
		case whiteout:
			return nil, true, errors.New("no such file in the image (deleted)")
		case want:
			if hdr.Typeflag != tar.TypeReg {
				return nil, true, fmt.Errorf("%s is not a regular file", want)
			}
			if hdr.Size > maxSchemaFile {
				return nil, true, fmt.Errorf("%s is %d bytes, too large", want, hdr.Size)
			}
			data, err := io.ReadAll(tr)
			return data, true, err
		}
	}
}

// selfDescription is what both SDKs' schema commands print about the app:
// {"request": SCHEMA, "response": SCHEMA, "capabilities": [NAME, ...]}.
// An SDK from before capabilities prints none, and its artifacts declare
// none.
type selfDescription struct {
	Request      json.RawMessage `json:"request"`
	Response     json.RawMessage `json:"response"`
	Capabilities []string        `json:"capabilities"`
}

// parseSchemas reads an SDK's self-description.
func parseSchemas(raw []byte) (selfDescription, error) {
	var doc selfDescription
	if err := json.Unmarshal(raw, &doc); err != nil {
		return selfDescription{}, fmt.Errorf("the schema document is not JSON: %w", err)
	}
	for _, s := range []struct {
		name string
		v    json.RawMessage
	}{{"request", doc.Request}, {"response", doc.Response}} {
		if !bytes.HasPrefix(bytes.TrimSpace(s.v), []byte("{")) {
			return selfDescription{}, fmt.Errorf("the schema document has no %q object", s.name)
		}
	}
	return doc, nil
}

// apply puts the self-description into the artifact's metadata.
func (d selfDescription) apply(md *artifact.Metadata) {
	md.RequestSchema, md.ResponseSchema, md.Capabilities = d.Request, d.Response, d.Capabilities
}

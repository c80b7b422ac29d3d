// Package python embeds the Python SDK source so builds never fetch it.
package python

import (
	"embed"
	"io/fs"
)

// The package source: what `pip install` needs and nothing else (no tests,
// no caches, no build output).
//
//go:embed pyproject.toml README.md src/ociapp/*.py src/ociapp/py.typed
var sdk embed.FS

// SDK returns the Python SDK's source tree, rooted where pyproject.toml is:
// pyproject.toml, README.md and src/ociapp/. Copy it into a build context and
// `pip install` the copy.
func SDK() fs.FS { return sdk }

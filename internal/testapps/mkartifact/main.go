// Command mkartifact builds test applications into artifacts, for tests
// in other processes: mkartifact DIR NAME...
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ociapp/ociapp/internal/testapps"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: mkartifact DIR NAME...")
		os.Exit(2)
	}
	dir := os.Args[1]
	for _, name := range os.Args[2:] {
		app, ok := testapps.Lookup(name)
		if !ok {
			fmt.Fprintf(os.Stderr, "mkartifact: no test app %q\n", name)
			os.Exit(2)
		}
		path := filepath.Join(dir, name+"-0.1.0.ociapp")
		if err := testapps.Build(context.Background(), name, app, path); err != nil {
			fmt.Fprintln(os.Stderr, "mkartifact:", err)
			os.Exit(1)
		}
		fmt.Println(path)
	}
}

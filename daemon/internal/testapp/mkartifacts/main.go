// Command mkartifacts writes the daemon tests' artifacts into a directory,
// for test suites outside Go (the Python host client's).
//
//	go run ./daemon/internal/testapp/mkartifacts DIR
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/ociapp/ociapp/daemon/internal/testapp"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mkartifacts DIR")
		os.Exit(2)
	}
	a, err := testapp.Build(context.Background(), os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkartifacts:", err)
		os.Exit(1)
	}
	fmt.Println(a.App)
	fmt.Println(a.ExitStart)
}

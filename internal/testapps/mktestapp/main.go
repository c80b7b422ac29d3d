// Command mktestapp writes the testapp program's artifacts into a
// directory, for test suites outside Go (the Python host client's).
//
//	go run ./internal/testapps/mktestapp DIR
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/ociapp/ociapp/internal/testapps"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mktestapp DIR")
		os.Exit(2)
	}
	a, err := testapps.BuildTestApp(context.Background(), os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktestapp:", err)
		os.Exit(1)
	}
	fmt.Println(a.App)
	fmt.Println(a.ExitStart)
	fmt.Println(a.Capable)
	fmt.Println(a.Streamer)
}

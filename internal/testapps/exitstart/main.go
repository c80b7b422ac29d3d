// Command exitstart is a test application that fails at start, like an
// app whose import fails: it logs an error and exits before listening.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("exitstart: loading the application")
	fmt.Fprintln(os.Stderr, "ImportError: cannot import name 'app' from 'exitstart'")
	os.Exit(3)
}

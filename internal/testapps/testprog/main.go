// Command testprog is the single binary of the engine tests' image: each
// mode exercises one engine behaviour from inside a container.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testprog exit N | lines N | ignore-term | term-exit | alloc MiB [AFTER] | probe DIR | write PATH")
		os.Exit(2)
	}
	arg := ""
	if len(os.Args) > 2 {
		arg = os.Args[2]
	}
	switch os.Args[1] {
	case "exit":
		code, _ := strconv.Atoi(arg)
		fmt.Println("stdout before exit")
		fmt.Fprintln(os.Stderr, "stderr before exit")
		fmt.Printf("exiting with %d\n", code)
		os.Exit(code)
	case "lines":
		n, _ := strconv.Atoi(arg)
		for i := 1; i <= n; i++ {
			// Alternate streams so the tail shows both were captured.
			if i%2 == 0 {
				fmt.Fprintf(os.Stderr, "line %d\n", i)
			} else {
				fmt.Fprintf(os.Stdout, "line %d\n", i)
			}
			time.Sleep(time.Millisecond) // keep the two streams' order stable in the log
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "term-exit":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("waiting for SIGTERM")
		<-c
		fmt.Println("got SIGTERM")
	case "alloc":
		mib, _ := strconv.Atoi(arg)
		if len(os.Args) > 3 {
			// Wait for the file AFTER to appear before allocating.
			for _, err := os.Stat(os.Args[3]); err != nil; _, err = os.Stat(os.Args[3]) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		var chunks [][]byte
		for i := 0; i < mib; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j) // touch every page so it is really resident
			}
			chunks = append(chunks, b)
		}
		fmt.Printf("allocated %d MiB\n", len(chunks))
	case "probe":
		probe(arg)
	case "write":
		if err := os.WriteFile(arg, []byte("written\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

// probe prints what the container's sandbox allows, one key=value per line.
func probe(dir string) {
	fmt.Printf("uid=%d\n", os.Getuid())
	fmt.Printf("pid1=%s\n", cmdline(1))
	fmt.Printf("rootfs_writable=%t\n", os.WriteFile("/probe", []byte("x"), 0o644) == nil)
	fmt.Printf("tmp_writable=%t\n", os.WriteFile("/tmp/probe", []byte("x"), 0o644) == nil)
	fmt.Printf("mount_writable=%t\n", os.WriteFile(filepath.Join(dir, "from-container"), []byte("hello\n"), 0o644) == nil)
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "CapEff" || k == "CapBnd" || k == "NoNewPrivs") {
			fmt.Printf("%s=%s\n", k, strings.TrimSpace(v))
		}
	}
	ifaces, _ := net.Interfaces()
	var names []string
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	fmt.Printf("interfaces=%s\n", strings.Join(names, ","))
	pidsMax, _ := os.ReadFile("/sys/fs/cgroup/pids/pids.max")
	if len(pidsMax) == 0 {
		pidsMax, _ = os.ReadFile("/sys/fs/cgroup/pids.max")
	}
	fmt.Printf("pids_max=%s\n", strings.TrimSpace(string(pidsMax)))
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

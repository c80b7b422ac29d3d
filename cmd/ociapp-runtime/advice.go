package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/runtime"
)

// printError prints err as command's failure and, on the next line, what
// to do about it. engineKind is the --engine in use.
func printError(w io.Writer, command, engineKind string, err error) {
	fmt.Fprintf(w, "%s: %v\n", command, err)
	if a := advice(err, engineKind); a != "" {
		fmt.Fprintf(w, "%s: %s\n", command, a)
	}
}

// advice says what a person can do about err, or "" when there is nothing
// to add. Libraries say what failed; the scripts and flags that help are
// named here, at the command line.
func advice(err error, engineKind string) string {
	var (
		unavailable *engine.UnavailableError
		crash       *runtime.WorkerCrashError
		startup     *runtime.StartupError
	)
	switch {
	case errors.As(err, &unavailable) && engineKind == engineKubernetes:
		return "is the cluster up? pass --kubeconfig and --containerd, or for the test cluster: scripts/ensure-kubernetes.sh, then . /var/lib/ociapp-k8s/env"
	case errors.As(err, &unavailable):
		return "is Docker running? scripts/ensure-docker.sh starts it; --docker-host (default: $DOCKER_HOST) reaches another daemon"
	case errors.As(err, &crash) && crash.OOMKilled, errors.As(err, &startup) && startup.OOMKilled:
		return "the container ran out of memory: raise --memory"
	}
	return ""
}

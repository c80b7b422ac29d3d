package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/ociapp/ociapp/runtime"
)

// Exit statuses of ociapp-runtime run; serve and inspect use them too.
const (
	exitOK          = 0
	exitAppError    = 1 // the application returned an error
	exitUsage       = 2 // bad flags, arguments or request JSON
	exitTimeout     = 3 // the request timed out
	exitStartup     = 4 // the container failed to start
	exitUnavailable = 5 // the artifact cannot be used or the engine cannot be reached
	exitCrash       = 6 // the container crashed while serving the request
	exitOther       = 7 // anything else (overloaded, interrupted, ...)
)

// fail reports err and returns its exit status.
func fail(stderr io.Writer, engineKind string, err error) int {
	printError(stderr, "ociapp-runtime", engineKind, err)
	return exitCode(err)
}

// exitCode maps an error to the documented exit statuses, by its kind.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	switch runtime.Classify(err) {
	case runtime.KindApp:
		return exitAppError
	case runtime.KindTimeout:
		return exitTimeout
	case runtime.KindStartup:
		return exitStartup
	case runtime.KindCrash:
		return exitCrash
	case runtime.KindArtifact, runtime.KindEngine:
		return exitUnavailable
	case runtime.KindPayload, runtime.KindConfig:
		return exitUsage
	}
	return exitOther
}

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
// named here, at the command line. It switches on runtime.Classify, as
// exitCode does, so that the advice fits the exit status; errors.As only
// reads the fields of the error already classified.
func advice(err error, engineKind string) string {
	switch runtime.Classify(err) {
	case runtime.KindEngine:
		return engineAdvice(engineKind)
	case runtime.KindStartup:
		var startup *runtime.StartupError
		if !errors.As(err, &startup) {
			return ""
		}
		if startup.OOMKilled {
			return oomAdvice
		}
		// The engine could not start the container: it, not the
		// application, is what to fix.
		if errors.As(startup.Err, new(*runtime.EngineUnavailableError)) {
			return engineAdvice(engineKind)
		}
	case runtime.KindCrash:
		var crash *runtime.WorkerCrashError
		if errors.As(err, &crash) && crash.OOMKilled {
			return oomAdvice
		}
	}
	return ""
}

const oomAdvice = "the container ran out of memory: raise --memory"

// engineAdvice says how to reach the engine of engineKind.
func engineAdvice(engineKind string) string {
	if engineKind == engineKubernetes {
		return "is the cluster up? pass --kubeconfig and --containerd, or for the test cluster: scripts/ensure-kubernetes.sh, then . /var/lib/ociapp-k8s/env"
	}
	return "is Docker running? scripts/ensure-docker.sh starts it; --docker-host (default: $DOCKER_HOST) reaches another daemon"
}

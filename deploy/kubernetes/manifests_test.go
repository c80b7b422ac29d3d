// Package kubernetes holds the manifests that run the runtime daemon on a
// cluster; its test has the API server validate them.
package kubernetes

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testKubeconfig = "/var/lib/ociapp-k8s/admin.kubeconfig"

// kubectl returns the test cluster's kubectl and the environment to run it
// in. Without a cluster the test is skipped, or fails when CI=true.
func kubectl(t *testing.T) (string, []string) {
	t.Helper()
	bin := os.Getenv("OCIAPP_KUBECTL")
	if bin == "" {
		bin = "/var/lib/ociapp-k8s/bin/kubectl"
	}
	env := os.Environ()
	if os.Getenv("KUBECONFIG") == "" {
		env = append(env, "KUBECONFIG="+testKubeconfig)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := "no test cluster (start it with scripts/ensure-kubernetes.sh): " + err.Error() + ": " + string(out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin, env
}

// TestManifestsServerDryRun has the API server validate every manifest
// (admission included) without creating anything. The namespace does not
// exist on the test cluster and could not be deleted there (no
// controller-manager), so the namespaced objects are checked in
// "default".
func TestManifestsServerDryRun(t *testing.T) {
	bin, env := kubectl(t)
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("manifests %v, %v", files, err)
	}
	for _, f := range files {
		if f == "kustomization.yaml" {
			continue
		}
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if f != "namespace.yaml" {
				b = bytes.ReplaceAll(b, []byte("namespace: ociapp-runtime"), []byte("namespace: default"))
			}
			cmd := exec.CommandContext(t.Context(), bin, "apply", "--dry-run=server", "-f", "-")
			cmd.Env, cmd.Stdin = env, bytes.NewReader(b)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server %s: %v\n%s", f, err, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
	// The kustomization lists every manifest.
	cmd := exec.CommandContext(t.Context(), bin, "kustomize", ".")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	for _, kind := range []string{"kind: Namespace", "kind: ServiceAccount", "kind: Role", "kind: RoleBinding", "kind: NetworkPolicy", "kind: DaemonSet"} {
		if !bytes.Contains(out, []byte(kind)) {
			t.Errorf("kustomization lacks %s", kind)
		}
	}
}

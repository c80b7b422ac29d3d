package kubernetes

import (
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzLabels: any label value becomes a valid Kubernetes label value, and
// the labels read back from a pod (its annotation, which anyone who may
// edit pods can change) are what was written, or the pod's labels.
func FuzzLabels(f *testing.F) {
	f.Add("dev.ociapp.runtime.state-dir", "/run/ociapp-runtime", `{"a":"b"}`)
	f.Add("dev.ociapp.artifact.digest", "sha256:0123", `not json`)
	f.Add("k", "", `null`)
	f.Fuzz(func(t *testing.T, key, value, annotation string) {
		labels, annotations, err := podLabels(map[string]string{key: value})
		if value == "" && len(validation.IsQualifiedName(key)) > 0 {
			if err != nil || len(labels) != 1 {
				t.Fatalf("blank label with invalid key %q: %v, %v; want it skipped", key, labels, err)
			}
			return
		}
		if err != nil {
			if len(validation.IsQualifiedName(key)) == 0 && utf8.ValidString(value) {
				t.Fatalf("valid label %s=%q refused: %v", key, value, err)
			}
			return
		}
		for k, v := range labels {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Fatalf("label %s=%q is invalid: %v", k, v, errs)
			}
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations}}
		if got := originalLabels(pod); got[key] != value || len(got) != 1 {
			t.Fatalf("labels read back as %v, want %s=%q", got, key, value)
		}
		pod.Annotations = map[string]string{annotationLabels: annotation}
		_ = originalLabels(pod)
	})
}

func FuzzTmpfsOptions(f *testing.F) {
	f.Add("rw,nosuid,nodev,size=64m")
	f.Add("size=9223372036854775807k")
	f.Fuzz(func(t *testing.T, opts string) {
		size, _, err := tmpfsOptions(opts)
		if err == nil && size < 0 {
			t.Fatalf("%q gave a negative size %d", opts, size)
		}
	})
}

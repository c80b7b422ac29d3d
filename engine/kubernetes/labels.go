package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels the engine adds to every pod, and the annotation that keeps the
// labels the pod was created with.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	managedBy        = "ociapp-runtime"
	annotationLabels = "dev.ociapp.engine/labels"
)

// podLabels returns the pod labels for the engine's labels and the
// annotations that keep them verbatim. A key Kubernetes does not accept is
// an error unless its value is empty. Kubernetes label values are short
// and limited to [A-Za-z0-9._-]; a value outside that (a path, a digest)
// is replaced by a hash of it, so that selecting by the original value
// still works.
func podLabels(in map[string]string) (labels, annotations map[string]string, err error) {
	labels = map[string]string{LabelManagedBy: managedBy}
	for k, v := range in {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			if v == "" {
				// A blank: Docker copies an image's labels into its
				// containers unless blanked; a pod gets none of them.
				continue
			}
			return nil, nil, fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if !utf8.ValidString(v) {
			// The API's strings are UTF-8: the value could not be kept.
			return nil, nil, fmt.Errorf("label %s: value %q is not UTF-8", k, v)
		}
		labels[k] = labelValue(v)
	}
	if len(in) == 0 {
		return labels, nil, nil
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding labels: %w", err)
	}
	return labels, map[string]string{annotationLabels: string(raw)}, nil
}

// labelValue is v if Kubernetes accepts it as a label value, else "h-" and
// 56 hex digits of its SHA-256.
func labelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) == 0 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "h-" + hex.EncodeToString(sum[:28])
}

// labelSelector selects pods carrying all of labels, as podLabels wrote
// them; an empty value matches any value.
func labelSelector(labels map[string]string) (string, error) {
	parts := []string{LabelManagedBy + "=" + managedBy}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return "", fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if v := labels[k]; v == "" {
			parts = append(parts, k)
		} else {
			parts = append(parts, k+"="+labelValue(v))
		}
	}
	return strings.Join(parts, ","), nil
}

// originalLabels returns the labels a pod was created with, or its labels
// when it carries no record of them.
func originalLabels(pod *corev1.Pod) map[string]string {
	var in map[string]string
	if raw, ok := pod.Annotations[annotationLabels]; ok && json.Unmarshal([]byte(raw), &in) == nil && in != nil {
		return in
	}
	out := maps.Clone(pod.Labels)
	delete(out, LabelManagedBy)
	return out
}

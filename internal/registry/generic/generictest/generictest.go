// Package generictest has test helpers shared by the registry packages.
package generictest

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Errors returns errs as their "path: message" strings, sorted.
func Errors(errs field.ErrorList) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	slices.Sort(out)
	return out
}

// ExpectErrors fails t unless errs are exactly want (in any order), each
// written as kubectl shows a cause: "spec.containers: Required value".
func ExpectErrors(t *testing.T, errs field.ErrorList, want ...string) {
	t.Helper()
	got := Errors(errs)
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("validation errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(w, "\n      "))
	}
}

package apiserver

import (
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestChooseContainer(t *testing.T) {
	ctr := func(names ...string) []corev1.Container {
		var cs []corev1.Container
		for _, n := range names {
			cs = append(cs, corev1.Container{Name: n})
		}
		return cs
	}
	tests := []struct {
		name      string
		spec      corev1.PodSpec
		container string
		want      string
		wantErr   string
	}{
		{name: "only container", spec: corev1.PodSpec{Containers: ctr("app")}, want: "app"},
		{name: "named", spec: corev1.PodSpec{Containers: ctr("a", "b")}, container: "b", want: "b"},
		{name: "init container by name", spec: corev1.PodSpec{InitContainers: ctr("init"), Containers: ctr("a", "b")}, container: "init", want: "init"},
		{name: "several", spec: corev1.PodSpec{InitContainers: ctr("init"), Containers: ctr("a", "b")},
			wantErr: "a container name must be specified for pod p, choose one of: [init a b]"},
		{name: "none", spec: corev1.PodSpec{}, wantErr: "a container name must be specified for pod p"},
		{name: "unknown", spec: corev1.PodSpec{Containers: ctr("a")}, container: "x", wantErr: "container x is not valid for pod p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: tt.spec}
			got, err := chooseContainer(pod, tt.container)
			if tt.wantErr != "" {
				if !apierrors.IsBadRequest(err) || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want BadRequest %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPodLogOptionsQuery(t *testing.T) {
	tests := []struct {
		query     string
		wantErr   string // from parsing (400)
		wantInval string // from validation (422)
		check     func(*corev1.PodLogOptions) bool
	}{
		{query: "follow=true&tailLines=10&container=c", check: func(o *corev1.PodLogOptions) bool {
			return o.Follow && *o.TailLines == 10 && o.Container == "c" && !o.Previous
		}},
		{query: "previous=1&timestamps=false", check: func(o *corev1.PodLogOptions) bool { return o.Previous && !o.Timestamps }},
		{query: "sinceTime=2026-11-26T03:00:00Z", check: func(o *corev1.PodLogOptions) bool { return o.SinceTime.Hour() == 3 }},
		{query: "limitBytes=100", check: func(o *corev1.PodLogOptions) bool { return *o.LimitBytes == 100 }},
		{query: "tailLines=abc", wantErr: "tailLines"},
		{query: "sinceTime=yesterday", wantErr: "sinceTime"},
		{query: "tailLines=-1", wantInval: "tailLines"},
		{query: "limitBytes=0", wantInval: "limitBytes"},
		{query: "sinceSeconds=0", wantInval: "sinceSeconds"},
		{query: "sinceSeconds=5&sinceTime=2026-11-26T03:00:00Z", wantInval: "at most one of"},
		{query: "stream=Other", wantInval: "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			opts, err := parsePodLogOptions(q)
			if tt.wantErr != "" {
				if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want BadRequest about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			errs := validatePodLogOptions(opts)
			if tt.wantInval != "" {
				if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), tt.wantInval) {
					t.Fatalf("validation = %v, want an error about %s", errs, tt.wantInval)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("validation: %v", errs)
			}
			if !tt.check(opts) {
				t.Errorf("options = %+v", opts)
			}
		})
	}
}

package apitest_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func TestStartServesBootstrapObjects(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	svc, err := s.Client.CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Fatalf("kubernetes service ClusterIP %q, want 10.96.0.1", svc.Spec.ClusterIP)
	}
}

package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/registry/networking"
)

// EnsureServiceCIDR creates the default ServiceCIDR "kubernetes" with the
// server's service CIDRs and marks it Ready, as kube-apiserver's default
// ServiceCIDR controller does. One with other CIDRs is left alone (spec.cidrs
// is immutable) and reported.
func EnsureServiceCIDR(ctx context.Context, c kubernetes.Interface, cidrs []string, logger *slog.Logger) error {
	api := c.NetworkingV1().ServiceCIDRs()
	sc, err := api.Get(ctx, networking.DefaultServiceCIDRName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sc, err = api.Create(ctx, &networkingv1.ServiceCIDR{
			ObjectMeta: metav1.ObjectMeta{Name: networking.DefaultServiceCIDRName},
			Spec:       networkingv1.ServiceCIDRSpec{CIDRs: cidrs},
		}, metav1.CreateOptions{})
		if err == nil {
			logger.Info("created the default ServiceCIDR", "cidrs", cidrs)
		}
	}
	if err != nil {
		return fmt.Errorf("bootstrap: default ServiceCIDR: %w", err)
	}
	if !slices.Equal(sc.Spec.CIDRs, cidrs) {
		logger.Warn("the default ServiceCIDR has other CIDRs than configured; leaving it", "have", sc.Spec.CIDRs, "want", cidrs)
	}
	if meta.IsStatusConditionTrue(sc.Status.Conditions, networkingv1.ServiceCIDRConditionReady) {
		return nil
	}
	meta.SetStatusCondition(&sc.Status.Conditions, metav1.Condition{
		Type:    networkingv1.ServiceCIDRConditionReady,
		Status:  metav1.ConditionTrue,
		Reason:  "ServiceCIDRReady",
		Message: "Kubernetes default Service CIDR is ready",
	})
	if _, err := api.UpdateStatus(ctx, sc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("bootstrap: default ServiceCIDR status: %w", err)
	}
	return nil
}

package endpointslicemirroring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	endpointsliceutil "k8s.io/endpointslice/util"
	utilnet "k8s.io/utils/net"

	"github.com/svcnet/svcnet/internal/controller/endpoints"
)

// Event reasons (upstream's).
const (
	InvalidIPAddress         = "InvalidIPAddress"
	TooManyAddressesToMirror = "TooManyAddressesToMirror"
)

// reconciler turns one Endpoints into its mirrored slices.
type reconciler struct {
	client                kubernetes.Interface
	tracker               *endpointsliceutil.EndpointSliceTracker
	eventRecorder         record.EventRecorder
	maxEndpointsPerSubset int32
	logger                *slog.Logger
}

// portKey identifies a group of slices: address type and port set.
type portKey string

func newPortKey(ports []discoveryv1.EndpointPort, addrType discoveryv1.AddressType) portKey {
	return portKey(string(addrType) + "-" + string(endpointsliceutil.NewPortMapKey(ports)))
}

// desired is the mirrored state computed from an Endpoints.
type desired struct {
	ports     map[portKey][]discoveryv1.EndpointPort
	endpoints map[portKey]endpointsliceutil.EndpointSet
	addrType  map[portKey]discoveryv1.AddressType
}

// slicesByAction are the writes one reconcile makes.
type slicesByAction struct {
	toCreate, toUpdate, toDelete []*discoveryv1.EndpointSlice
}

// reconcile creates, updates and deletes slices so that existing matches
// the Endpoints.
func (r *reconciler) reconcile(ctx context.Context, ep *corev1.Endpoints, existing []*discoveryv1.EndpointSlice) error {
	d := desired{
		ports:     map[portKey][]discoveryv1.EndpointPort{},
		endpoints: map[portKey]endpointsliceutil.EndpointSet{},
		addrType:  map[portKey]discoveryv1.AddressType{},
	}
	invalid, skipped := 0, 0
	for _, subset := range endpoints.RepackSubsets(ep.Subsets) {
		ports := toSlicePorts(subset.Ports)
		keys := map[discoveryv1.AddressType]portKey{}
		for _, at := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
			k := newPortKey(ports, at)
			keys[at] = k
			if d.endpoints[k] == nil {
				d.endpoints[k] = endpointsliceutil.EndpointSet{}
			}
			d.ports[k] = ports
			d.addrType[k] = at
		}
		added := 0
		total := len(subset.Addresses) + len(subset.NotReadyAddresses)
		add := func(addrs []corev1.EndpointAddress, ready bool) {
			for _, a := range addrs {
				// One slice per subset and family: at most this many.
				if added >= int(r.maxEndpointsPerSubset) {
					return
				}
				e, at, ok := toEndpoint(a, ready)
				if !ok {
					invalid++
					r.logger.Info("address in Endpoints is not a valid IP, not mirrored", "endpoints", ep.Namespace+"/"+ep.Name, "ip", a.IP)
					continue
				}
				d.endpoints[keys[at]].Insert(e)
				added++
			}
		}
		add(subset.Addresses, true)
		add(subset.NotReadyAddresses, false)
		skipped += total - added
	}
	if invalid > 0 {
		r.eventRecorder.Eventf(ep, corev1.EventTypeWarning, InvalidIPAddress,
			"Skipped %d invalid IP addresses when mirroring to EndpointSlices", invalid)
	}
	if skipped > invalid {
		r.eventRecorder.Eventf(ep, corev1.EventTypeWarning, TooManyAddressesToMirror,
			"A max of %d addresses can be mirrored to EndpointSlices per Endpoints subset. %d addresses were skipped", r.maxEndpointsPerSubset, skipped)
	}

	existingByKey := map[portKey][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		k := newPortKey(s.Ports, s.AddressType)
		existingByKey[k] = append(existingByKey[k], s)
	}
	var all slicesByAction
	for k, set := range d.endpoints {
		got := r.reconcileByPortKey(ep, existingByKey[k], set, d.ports[k], d.addrType[k])
		all.toCreate = append(all.toCreate, got.toCreate...)
		all.toUpdate = append(all.toUpdate, got.toUpdate...)
		all.toDelete = append(all.toDelete, got.toDelete...)
	}
	for k, slices := range existingByKey {
		if _, ok := d.endpoints[k]; !ok {
			all.toDelete = append(all.toDelete, slices...)
		}
	}
	return r.finalize(ctx, ep, all)
}

// reconcileByPortKey keeps (at most) one slice for one port set and
// address type.
func (r *reconciler) reconcileByPortKey(ep *corev1.Endpoints, existing []*discoveryv1.EndpointSlice,
	want endpointsliceutil.EndpointSet, ports []discoveryv1.EndpointPort, at discoveryv1.AddressType) slicesByAction {
	var out slicesByAction
	if want.Len() == 0 {
		out.toDelete = existing
		return out
	}
	name := ""
	if len(existing) > 0 {
		out.toDelete = existing[1:]
		first := existing[0]
		name = first.Name
		wantAnnotations := withoutKeys(ep.Annotations, corev1.EndpointsLastChangeTriggerTime, corev1.LastAppliedConfigAnnotation)
		gotLabels := withoutKeys(first.Labels, discoveryv1.LabelManagedBy, discoveryv1.LabelServiceName)
		if sameEndpoints(first, want) &&
			apiequality.Semantic.DeepEqual(ep.Labels, gotLabels) &&
			apiequality.Semantic.DeepEqual(wantAnnotations, first.Annotations) &&
			!ownedByOtherEndpoints(ep, first) {
			if !r.tracker.Has(first) {
				r.tracker.Update(first) // track every slice we keep
			}
			return out
		}
	}
	s := newSlice(ep, ports, at, name)
	for want.Len() > 0 && len(s.Endpoints) < int(r.maxEndpointsPerSubset) {
		e, _ := want.PopAny()
		s.Endpoints = append(s.Endpoints, *e)
	}
	if s.Name != "" {
		out.toUpdate = []*discoveryv1.EndpointSlice{s}
	} else {
		out.toCreate = []*discoveryv1.EndpointSlice{s}
	}
	return out
}

// sameEndpoints reports whether a slice holds exactly the wanted endpoints.
func sameEndpoints(s *discoveryv1.EndpointSlice, want endpointsliceutil.EndpointSet) bool {
	matches := 0
	for i := range s.Endpoints {
		got := want.Get(&s.Endpoints[i])
		if got == nil || !endpointsliceutil.EndpointsEqualBeyondHash(got, &s.Endpoints[i]) {
			return false
		}
		matches++
	}
	return matches == want.Len()
}

// ownedByOtherEndpoints is true when the slice's owner is an Endpoints of
// this name with another UID (the Endpoints was deleted and recreated).
func ownedByOtherEndpoints(ep *corev1.Endpoints, s *discoveryv1.EndpointSlice) bool {
	for _, o := range s.OwnerReferences {
		if o.Kind == "Endpoints" && o.Name == ep.Name && o.UID != ep.UID {
			return true
		}
	}
	return false
}

// finalize writes the changes, first turning create+delete pairs of the
// same address type into updates of the slice that would be deleted.
func (r *reconciler) finalize(ctx context.Context, ep *corev1.Endpoints, s slicesByAction) error {
	var creates []*discoveryv1.EndpointSlice
	for _, c := range s.toCreate {
		recycled := false
		for i, d := range s.toDelete {
			if d.AddressType == c.AddressType {
				c.Name, c.GenerateName = d.Name, ""
				s.toUpdate = append(s.toUpdate, c)
				s.toDelete = append(s.toDelete[:i:i], s.toDelete[i+1:]...)
				recycled = true
				break
			}
		}
		if !recycled {
			creates = append(creates, c)
		}
	}
	client := r.client.DiscoveryV1().EndpointSlices(ep.Namespace)
	if ep.DeletionTimestamp == nil {
		for _, c := range creates {
			created, err := client.Create(ctx, c, metav1.CreateOptions{})
			if err != nil {
				if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
					return nil
				}
				return fmt.Errorf("endpointslicemirroring: create slice for %s/%s: %w", ep.Namespace, ep.Name, err)
			}
			r.tracker.Update(created)
		}
	}
	for _, u := range s.toUpdate {
		updated, err := client.Update(ctx, u, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("endpointslicemirroring: update slice %s for %s/%s: %w", u.Name, ep.Namespace, ep.Name, err)
		}
		r.tracker.Update(updated)
	}
	for _, d := range s.toDelete {
		if err := client.Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpointslicemirroring: delete slice %s for %s/%s: %w", d.Name, ep.Namespace, ep.Name, err)
		}
		r.tracker.ExpectDeletion(d)
	}
	return nil
}

// deleteSlices deletes the given mirrored slices.
func (r *reconciler) deleteSlices(ctx context.Context, namespace, name string, slices []*discoveryv1.EndpointSlice) error {
	var errs []error
	for _, s := range slices {
		err := r.client.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("endpointslicemirroring: delete %d/%d slices of %s/%s: %w", len(errs), len(slices), namespace, name, errors.Join(errs...))
	}
	return nil
}

// newSlice builds a mirrored slice (named, for an update, or with a
// generated name, for a create).
func newSlice(ep *corev1.Endpoints, ports []discoveryv1.EndpointPort, at discoveryv1.AddressType, name string) *discoveryv1.EndpointSlice {
	ref := metav1.NewControllerRef(ep, schema.GroupVersionKind{Version: "v1", Kind: "Endpoints"})
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Labels:          map[string]string{},
			Annotations:     map[string]string{},
			OwnerReferences: []metav1.OwnerReference{*ref},
			Namespace:       ep.Namespace,
		},
		Ports:       ports,
		AddressType: at,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for k, v := range ep.Labels {
		s.Labels[k] = v
	}
	s.Labels[discoveryv1.LabelServiceName] = ep.Name
	s.Labels[discoveryv1.LabelManagedBy] = ControllerName
	for k, v := range ep.Annotations {
		if k == corev1.EndpointsLastChangeTriggerTime || k == corev1.LastAppliedConfigAnnotation {
			continue
		}
		s.Annotations[k] = v
	}
	if name != "" {
		s.Name = name
	} else {
		s.GenerateName = slicePrefix(ep.Name)
	}
	return s
}

// slicePrefix is "<name>-" when that is a valid generateName, else name.
func slicePrefix(name string) string {
	prefix := name + "-"
	if len(apivalidation.NameIsDNSSubdomain(prefix, true)) != 0 {
		return name
	}
	return prefix
}

// toEndpoint converts an Endpoints address; ok is false for an invalid IP.
func toEndpoint(a corev1.EndpointAddress, ready bool) (*discoveryv1.Endpoint, discoveryv1.AddressType, bool) {
	ip := utilnet.ParseIPSloppy(a.IP)
	if ip == nil {
		return nil, "", false
	}
	at := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		at = discoveryv1.AddressTypeIPv6
	}
	e := &discoveryv1.Endpoint{
		Addresses:  []string{ip.String()}, // canonical form of a sloppy IP
		Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		TargetRef:  a.TargetRef,
		NodeName:   a.NodeName,
	}
	if a.Hostname != "" {
		h := a.Hostname
		e.Hostname = &h
	}
	return e, at, true
}

func toSlicePorts(ports []corev1.EndpointPort) []discoveryv1.EndpointPort {
	out := []discoveryv1.EndpointPort{}
	for _, p := range ports {
		p := p
		out = append(out, discoveryv1.EndpointPort{Name: &p.Name, Port: &p.Port, Protocol: &p.Protocol, AppProtocol: p.AppProtocol})
	}
	return out
}

// withoutKeys returns a copy of m without keys. (apiequality.Semantic
// treats an empty map as equal to nil.)
func withoutKeys(m map[string]string, keys ...string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

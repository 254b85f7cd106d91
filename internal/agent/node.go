package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/version"
)

// maxPods is the pods capacity the Node advertises (the kubelet's default).
const maxPods = 110

// leaseNamespace holds the node heartbeat Leases.
const leaseNamespace = "kube-node-lease"

// registerNode creates this agent's Node, or brings an existing one (a
// restart, or a re-registration after deletion) up to date, and returns it.
func (a *Agent) registerNode(ctx context.Context) (*v1.Node, error) {
	nodes := a.client.CoreV1().Nodes()
	var out *v1.Node
	err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			n = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName}}
			a.fillNode(n)
			if n, err = nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
				a.log.Warn("create node", "err", err)
				return false, nil
			}
		case err != nil:
			a.log.Warn("get node", "err", err)
			return false, nil
		default:
			a.fillNode(n)
			if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				a.log.Warn("update node", "err", err)
				return false, nil
			}
		}
		a.fillNodeStatus(n)
		if n, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			a.log.Warn("update node status", "err", err)
			return false, nil
		}
		out = n
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: register node %q: %w", a.cfg.NodeName, err)
	}
	if err := a.renewLease(ctx); err != nil {
		a.log.Warn("node lease", "err", err)
	}
	return out, nil
}

// fillNode sets the labels a kubelet puts on its Node.
func (a *Agent) fillNode(n *v1.Node) {
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels[v1.LabelHostname] = a.cfg.NodeName
	n.Labels[v1.LabelOSStable] = goruntime.GOOS
	n.Labels[v1.LabelArchStable] = goruntime.GOARCH
}

// fillNodeStatus writes the kubelet-style status: addresses, capacity,
// conditions (Ready and the pressure conditions), node info and the kubelet
// endpoint.
func (a *Agent) fillNodeStatus(n *v1.Node) {
	now := metav1.Now()
	n.Status.Addresses = []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: a.cfg.NodeIP.String()},
		{Type: v1.NodeHostName, Address: a.cfg.NodeName},
	}
	capacity := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		v1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		v1.ResourcePods:   *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	n.Status.Capacity = capacity
	n.Status.Allocatable = capacity.DeepCopy()
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		c := v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range n.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	n.Status.Conditions = []v1.NodeCondition{
		cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(a.kubeletPort())
	n.Status.NodeInfo = v1.NodeSystemInfo{
		MachineID:               readTrim("/etc/machine-id"),
		BootID:                  readTrim("/proc/sys/kernel/random/boot_id"),
		KernelVersion:           kernelRelease(),
		OSImage:                 osImage(),
		ContainerRuntimeVersion: "svcnet://" + version.Version,
		KubeletVersion:          version.KubernetesVersion,
		KubeProxyVersion:        "",
		OperatingSystem:         goruntime.GOOS,
		Architecture:            goruntime.GOARCH,
	}
}

func (a *Agent) kubeletPort() int {
	if a.kubelet != nil {
		if _, p, err := net.SplitHostPort(a.kubelet.Addr()); err == nil {
			if port, err := strconv.Atoi(p); err == nil {
				return port
			}
		}
	}
	return a.cfg.KubeletPort
}

// heartbeat renews the Lease every quarter of its duration and refreshes
// the node status every StatusFrequency (and recreates a deleted Node).
func (a *Agent) heartbeat(ctx context.Context) {
	leaseTick := time.NewTicker(a.cfg.LeaseDuration / 4)
	defer leaseTick.Stop()
	statusTick := time.NewTicker(a.cfg.StatusFrequency)
	defer statusTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseTick.C:
			if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("renew node lease", "err", err)
			}
		case <-statusTick.C:
			if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("update node status", "err", err)
			}
		}
	}
}

func (a *Agent) updateNodeStatus(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	n, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = a.registerNode(ctx)
		return err
	}
	if err != nil {
		return err
	}
	a.fillNodeStatus(n)
	_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// renewLease creates or renews kube-node-lease/<node>, owned by the Node
// like the kubelet's.
func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.cfg.NodeName),
				LeaseDurationSeconds: ptr.To(int32(a.cfg.LeaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		if n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	l.Spec.HolderIdentity = ptr.To(a.cfg.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(a.cfg.LeaseDuration / time.Second))
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// waitPodCIDR waits until node-ipam has given the node a podCIDR.
func (a *Agent) waitPodCIDR(ctx context.Context, n *v1.Node) (netip.Prefix, error) {
	if c := podCIDRs(n); len(c) > 0 {
		return c[0], nil
	}
	a.log.Info("waiting for the node's podCIDR (node-ipam controller)")
	for {
		w, err := a.client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", a.cfg.NodeName).String(),
			ResourceVersion: n.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return netip.Prefix{}, ctx.Err()
			}
			n, err = a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
			if err == nil {
				if c := podCIDRs(n); len(c) > 0 {
					return c[0], nil
				}
			}
			time.Sleep(time.Second)
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				break
			}
			if nn, ok := ev.Object.(*v1.Node); ok {
				n = nn
				if c := podCIDRs(nn); len(c) > 0 {
					w.Stop()
					return c[0], nil
				}
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return netip.Prefix{}, ctx.Err()
		}
		if n, err = a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err != nil {
			return netip.Prefix{}, fmt.Errorf("agent: get node: %w", err)
		}
		if c := podCIDRs(n); len(c) > 0 {
			return c[0], nil
		}
	}
}

// podCIDRs parses spec.podCIDRs (or spec.podCIDR).
func podCIDRs(n *v1.Node) []netip.Prefix {
	ss := n.Spec.PodCIDRs
	if len(ss) == 0 && n.Spec.PodCIDR != "" {
		ss = []string{n.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// nodeInternalIP returns the node's first InternalIP.
func nodeInternalIP(n *v1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}

func memTotal() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func kernelRelease() string { return readTrim("/proc/sys/kernel/osrelease") }

// osImage is PRETTY_NAME from /etc/os-release, as the kubelet reports it.
func osImage() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return goruntime.GOOS
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return goruntime.GOOS
}

func goruntimeNumCPU() int { return goruntime.NumCPU() }

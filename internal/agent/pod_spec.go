package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/svcnet/svcnet/internal/agent/runtime"
)

// defaultPath is the PATH of a container process, the one container
// images conventionally set.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// configError is a container that cannot be started as specified (no
// command for a non-agnhost image, a missing ConfigMap key …). It becomes the
// container's Waiting reason and message instead of a sync error.
type configError struct{ reason, msg string }

func (e *configError) Error() string { return e.msg }

// isAgnhostImage reports whether image is the upstream test image that
// svcnet serves with its built-in `svcnet agnhost`.
func isAgnhostImage(image string) bool {
	name, _, _ := strings.Cut(path.Base(image), ":")
	name, _, _ = strings.Cut(name, "@")
	return name == "agnhost"
}

func isPauseImage(image string) bool {
	name, _, _ := strings.Cut(path.Base(image), ":")
	return name == "pause"
}

// containerArgv turns command+args (already $(VAR)-expanded) into the
// process argv. Images are not pulled: the agnhost and pause images run the
// built-in `svcnet agnhost`, a leading "svcnet" runs this binary, and any
// other container must name its command.
func (a *Agent) containerArgv(c *v1.Container, cmd, args []string) ([]string, error) {
	exe := a.cfg.Exe
	switch {
	case len(cmd) == 0 && isAgnhostImage(c.Image):
		return append([]string{exe, "agnhost"}, args...), nil
	case len(cmd) == 0 && isPauseImage(c.Image):
		return []string{exe, "agnhost", "pause"}, nil
	case len(cmd) == 0:
		return nil, &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf(
			"svcnet runs each container's command as a process on the node and pulls no images: container %q (image %q) has no command; set spec.containers[].command (image names are only recorded, except the agnhost and pause test images)",
			c.Name, c.Image)}
	case isAgnhostImage(c.Image) && (cmd[0] == "/agnhost" || cmd[0] == "agnhost"):
		return slices.Concat([]string{exe, "agnhost"}, cmd[1:], args), nil
	case cmd[0] == "svcnet" || cmd[0] == "/svcnet":
		return slices.Concat([]string{exe}, cmd[1:], args), nil
	}
	return slices.Concat(cmd, args), nil
}

// containerSpec builds what the runtime runs for container c of pod.
func (a *Agent) containerSpec(ctx context.Context, pod *v1.Pod, c *v1.Container, podIP netip.Addr) (runtime.ContainerSpec, error) {
	env, err := a.containerEnv(ctx, pod, c, podIP)
	if err != nil {
		return runtime.ContainerSpec{}, err
	}
	lookup := envLookup(env)
	cmd := expandAll(c.Command, lookup)
	args := expandAll(c.Args, lookup)
	argv, err := a.containerArgv(c, cmd, args)
	if err != nil {
		return runtime.ContainerSpec{}, err
	}
	mounts, err := a.containerMounts(ctx, pod, c)
	if err != nil {
		return runtime.ContainerSpec{}, err
	}
	return runtime.ContainerSpec{Name: c.Name, Argv: argv, Env: env, WorkingDir: c.WorkingDir, Mounts: mounts}, nil
}

// containerEnv is the process environment: PATH, HOSTNAME and HOME as a
// container image would have them, the service link variables, then envFrom
// and env in order (with $(VAR) expansion of earlier variables).
func (a *Agent) containerEnv(ctx context.Context, pod *v1.Pod, c *v1.Container, podIP netip.Addr) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	// The directory of the svcnet binary is on PATH too, so commands like
	// `svcnet agnhost connect` work in pods wherever svcnet is installed.
	pathVar := defaultPath
	if dir := filepath.Dir(a.cfg.Exe); !slices.Contains(filepath.SplitList(pathVar), dir) {
		pathVar += ":" + dir
	}
	set("PATH", pathVar)
	set("HOSTNAME", podHostname(pod))
	set("HOME", "/root")
	for k, v := range a.serviceEnv(pod) {
		set(k, v)
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("configmap %q not found", from.ConfigMapRef.Name)}
			}
			for k, v := range cm.Data {
				set(from.Prefix+k, v)
			}
		case from.SecretRef != nil:
			return nil, &configError{reason: "CreateContainerConfigError", msg: "svcnet serves no Secrets: envFrom.secretRef is not supported"}
		}
	}
	for _, e := range c.Env {
		v, err := a.envValue(ctx, pod, c, e, podIP, vars)
		if err != nil {
			return nil, err
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

func (a *Agent) envValue(ctx context.Context, pod *v1.Pod, c *v1.Container, e v1.EnvVar, podIP netip.Addr, vars map[string]string) (string, error) {
	if e.ValueFrom == nil {
		return expand(e.Value, func(k string) (string, bool) { v, ok := vars[k]; return v, ok }), nil
	}
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		return a.fieldRef(pod, vf.FieldRef.FieldPath, podIP)
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if optional {
				return "", nil
			}
			return "", &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("configmap %q not found", ref.Name)}
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional {
			return "", &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
		}
		return v, nil
	case vf.ResourceFieldRef != nil:
		return resourceFieldValue(c, vf.ResourceFieldRef), nil
	case vf.SecretKeyRef != nil:
		return "", &configError{reason: "CreateContainerConfigError", msg: "svcnet serves no Secrets: env valueFrom.secretKeyRef is not supported"}
	}
	return "", nil
}

// fieldRef resolves the downward-API field paths the kubelet supports.
func (a *Agent) fieldRef(pod *v1.Pod, fp string, podIP netip.Addr) (string, error) {
	podIPs := podIP.String()
	if !podIP.IsValid() {
		podIPs = ""
	}
	switch fp {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return a.cfg.NodeIP.String(), nil
	case "status.podIP", "status.podIPs":
		return podIPs, nil
	}
	for _, m := range []struct {
		prefix string
		values map[string]string
	}{{"metadata.labels", pod.Labels}, {"metadata.annotations", pod.Annotations}} {
		if fp == m.prefix {
			var lines []string
			for k, v := range m.values {
				lines = append(lines, k+"="+strconv.Quote(v))
			}
			slices.Sort(lines)
			return strings.Join(lines, "\n"), nil
		}
		if rest, ok := strings.CutPrefix(fp, m.prefix+"['"); ok {
			return m.values[strings.TrimSuffix(rest, "']")], nil
		}
	}
	return "", &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("unsupported fieldRef %q", fp)}
}

// resourceFieldValue answers resourceFieldRef from the container's limits
// (else requests, else the node's capacity), in the divisor's unit.
func resourceFieldValue(c *v1.Container, ref *v1.ResourceFieldSelector) string {
	name := strings.TrimPrefix(strings.TrimPrefix(ref.Resource, "limits."), "requests.")
	q, ok := c.Resources.Limits[v1.ResourceName(name)]
	if !ok || strings.HasPrefix(ref.Resource, "requests.") {
		q, ok = c.Resources.Requests[v1.ResourceName(name)]
	}
	if !ok {
		switch name {
		case "cpu":
			return strconv.Itoa(goruntimeNumCPU())
		case "memory":
			return strconv.FormatInt(memTotal(), 10)
		}
		return "0"
	}
	div := ref.Divisor
	if div.IsZero() {
		return strconv.FormatInt(q.Value(), 10)
	}
	return strconv.FormatInt((q.MilliValue()+div.MilliValue()-1)/div.MilliValue(), 10)
}

// serviceEnv returns the docker-link style variables of the services the
// pod sees: the "kubernetes" service always, and its own namespace's
// services when enableServiceLinks is true (the default).
func (a *Agent) serviceEnv(pod *v1.Pod) map[string]string {
	out := map[string]string{}
	if a.svcLister == nil {
		return out
	}
	var svcs []*v1.Service
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		svcs, _ = a.svcLister.Services(pod.Namespace).List(labels.Everything())
	}
	if pod.Namespace != metav1.NamespaceDefault || len(svcs) == 0 {
		if k, err := a.svcLister.Services(metav1.NamespaceDefault).Get("kubernetes"); err == nil {
			svcs = append(svcs, k)
		}
	}
	for _, s := range svcs {
		if !v1helperIsServiceIPSet(s) || len(s.Spec.Ports) == 0 {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		ip := s.Spec.ClusterIP
		first := s.Spec.Ports[0]
		out[name+"_SERVICE_HOST"] = ip
		out[name+"_SERVICE_PORT"] = strconv.Itoa(int(first.Port))
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out[name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = strconv.Itoa(int(p.Port))
			}
		}
		proto := strings.ToLower(string(first.Protocol))
		host := ip
		if strings.Contains(ip, ":") {
			host = "[" + ip + "]"
		}
		out[name+"_PORT"] = fmt.Sprintf("%s://%s:%d", proto, host, first.Port)
		for _, p := range s.Spec.Ports {
			pfx := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(string(p.Protocol)))
			out[pfx] = fmt.Sprintf("%s://%s:%d", strings.ToLower(string(p.Protocol)), host, p.Port)
			out[pfx+"_PROTO"] = strings.ToLower(string(p.Protocol))
			out[pfx+"_PORT"] = strconv.Itoa(int(p.Port))
			out[pfx+"_ADDR"] = ip
		}
	}
	return out
}

func v1helperIsServiceIPSet(s *v1.Service) bool {
	return s.Spec.ClusterIP != "" && s.Spec.ClusterIP != v1.ClusterIPNone
}

// containerMounts maps the container's volumeMounts: emptyDir and
// configMap volumes are per-pod directories, hostPath binds the node path.
func (a *Agent) containerMounts(ctx context.Context, pod *v1.Pod, c *v1.Container) ([]runtime.Mount, error) {
	vols := map[string]*v1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var out []runtime.Mount
	for _, vm := range c.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return nil, &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("volume %q not found", vm.Name)}
		}
		src, err := a.volumeSource(ctx, pod, vol)
		if err != nil {
			return nil, err
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+vm.SubPath))
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		}
		out = append(out, runtime.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	return out, nil
}

func (a *Agent) volumeSource(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (string, error) {
	uid := string(pod.UID)
	switch {
	case vol.EmptyDir != nil:
		return a.rt.VolumeDir(uid, vol.Name)
	case vol.HostPath != nil:
		return vol.HostPath.Path, nil
	case vol.ConfigMap != nil:
		dir, err := a.rt.VolumeDir(uid, vol.Name)
		if err != nil {
			return "", err
		}
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, vol.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			if vol.ConfigMap.Optional != nil && *vol.ConfigMap.Optional {
				return dir, nil
			}
			return "", &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("configmap %q not found", vol.ConfigMap.Name)}
		}
		files := map[string]string{}
		if len(vol.ConfigMap.Items) == 0 {
			for k, v := range cm.Data {
				files[k] = v
			}
		}
		for _, it := range vol.ConfigMap.Items {
			files[it.Path] = cm.Data[it.Key]
		}
		for p, v := range files {
			fp := filepath.Join(dir, filepath.Clean("/"+p))
			if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
				return "", err
			}
			if err := os.WriteFile(fp, []byte(v), 0o644); err != nil {
				return "", err
			}
		}
		return dir, nil
	}
	return "", &configError{reason: "CreateContainerConfigError", msg: fmt.Sprintf("volume %q: only emptyDir, hostPath and configMap volumes are supported by svcnet", vol.Name)}
}

// podHostname is the pod's UTS hostname: spec.hostname, else the pod name
// (truncated to 63 characters as the kubelet does).
func podHostname(pod *v1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// resolvConf renders the pod's /etc/resolv.conf per dnsPolicy and
// dnsConfig; nil means "the node's file" (policy Default).
func (a *Agent) resolvConf(pod *v1.Pod, hostFile string) []byte {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = v1.DNSClusterFirst
	}
	if policy == v1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = v1.DNSDefault
	}
	hostNS, hostSearch, hostOpts := parseResolvConf(hostFile)
	var ns, search, opts []string
	switch policy {
	case v1.DNSClusterFirst, v1.DNSClusterFirstWithHostNet:
		for _, ip := range a.cfg.ClusterDNS {
			ns = append(ns, ip.String())
		}
		d := a.cfg.ClusterDomain
		search = append([]string{pod.Namespace + ".svc." + d, "svc." + d, d}, hostSearch...)
		opts = []string{"ndots:5"}
	case v1.DNSDefault:
		if pod.Spec.DNSConfig == nil {
			return nil
		}
		ns, search, opts = hostNS, hostSearch, hostOpts
	case v1.DNSNone:
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		ns = append(ns, dc.Nameservers...)
		for _, s := range dc.Searches {
			if !slices.Contains(search, s) {
				search = append(search, s)
			}
		}
		for _, o := range dc.Options {
			opts = slices.DeleteFunc(opts, func(x string) bool { n, _, _ := strings.Cut(x, ":"); return n == o.Name })
			if o.Value != nil {
				opts = append(opts, o.Name+":"+*o.Value)
			} else {
				opts = append(opts, o.Name)
			}
		}
	}
	var b strings.Builder
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	for _, n := range ns {
		b.WriteString("nameserver " + n + "\n")
	}
	if len(opts) > 0 {
		b.WriteString("options " + strings.Join(opts, " ") + "\n")
	}
	return []byte(b.String())
}

func parseResolvConf(path string) (ns, search, opts []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			ns = append(ns, f[1])
		case "search", "domain":
			search = f[1:]
		case "options":
			opts = f[1:]
		}
	}
	return ns, search, opts
}

// hostsFile renders the kubelet-managed /etc/hosts of a pod; nil for
// hostNetwork pods (they see the node's).
func (a *Agent) hostsFile(pod *v1.Pod, podIP netip.Addr) []byte {
	if pod.Spec.HostNetwork {
		return nil
	}
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	host := podHostname(pod)
	if podIP.IsValid() {
		if pod.Spec.Subdomain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, host, pod.Spec.Subdomain, pod.Namespace, a.cfg.ClusterDomain, host)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", podIP, host)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, ha := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	return []byte(b.String())
}

// envLookup indexes a "K=V" environment.
func envLookup(env []string) func(string) (string, bool) {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func expandAll(in []string, lookup func(string) (string, bool)) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, lookup)
	}
	return out
}

// expand replaces $(VAR) with the variable's value as Kubernetes does for
// command, args and env values: "$$" is a literal "$", and a reference to
// an undefined variable is left as written.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// Package runtime runs process pods: pods without images, whose containers
// are host processes inside the pod's own namespaces.
//
// # Sandbox
//
// A pod is a long-lived sandbox process (`svcnet internal sandbox`,
// RunSandbox), started with CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWNS in its own
// session, so that it survives the agent. It sets the pod's hostname, makes
// its mounts rprivate, bind-mounts the pod's resolv.conf and hosts over
// /etc/resolv.conf and /etc/hosts and a per-pod directory over /tmp, brings
// lo up, reports "ok" on descriptor 3 and waits for SIGTERM. Its namespaces,
// /proc/<pid>/ns/{net,uts,mnt}, are the pod's: the network code moves the
// pod's veth into /proc/<pid>/ns/net. A hostNetwork pod gets only its own
// mount namespace.
//
// # Containers
//
// Every container attempt runs under a shim (`svcnet internal shim`,
// RunShim), also in its own session: the shim starts
// `nsenter --target <sandbox> --mount --wd=/proc/<sandbox>/root/DIR --net --uts -- argv...`
// in a new process group (nsenter opens --wd before entering the
// namespaces; the /proc/<pid>/root path resolves it in the pod's), writes the container's stdout and stderr to a
// CRI-format log, forwards SIGTERM, and when the container exits kills the
// rest of its process group (as a container's pid namespace would) and
// writes an exit record. The agent thus learns exit codes even of containers
// it adopted after a restart.
//
// Bind mounts (volumes) are made in the pod's mount namespace, shared by its
// containers, by the runtime itself: open_tree(2) clones the source in the
// node's namespace (the source may be hidden in the pod's, e.g. under the
// pod's private /tmp), and a thread that has joined the pod's mount
// namespace move_mount(2)s it onto the target. The same thread resolves the
// command through the container's PATH and creates a missing working
// directory, so that a container that cannot start is reported as a
// StartError, not as an exit of nsenter.
//
// # State and adoption
//
// Everything is on disk under Config.RootDir/pods/<uid> (see state.go):
// pod.json names the sandbox, and per container attempt a spec (runtime), a
// start record (shim), an exit record (shim) and the log. Processes are
// named by pid plus start time (/proc/<pid>/stat field 22), so that a
// recycled pid is never taken for ours. New re-reads the directory: running
// sandboxes and containers are adopted with their pids, never started
// twice. The runtime waits for the shims it started; adopted shims are
// polled (Config.PollInterval) for their exit record.
//
// The latest two attempts of each container are kept, so that the logs of
// the previous attempt stay available (Logs with Previous).
//
// Not done: logs are not rotated (kubelet rotates at 10 MiB), and a
// process a container started in a new session survives the container's
// exit (there is no pid namespace); RemovePod kills it.
//
// Cost: the sandbox and every shim are svcnet processes; each holds about
// 13 MB of anonymous memory (package initialisation of the whole binary)
// besides the shared text of the binary.
//
// # Removal
//
// RemovePod SIGKILLs the containers' process groups, exec sessions and any
// other process in the pod's mount namespace (this catches processes that
// left their group), then the sandbox; once the last process is gone the
// namespaces and every mount in them vanish, and the pod directory is
// deleted. No cgroups are used: resources are not limited or accounted.
package runtime

// Package probe runs kubelet probes (corev1.Probe) against a pod.
//
// Do runs one probe with upstream's handler semantics:
//
//   - httpGet: GET scheme://host:port/path with host = httpGet.host or the
//     pod IP, a named port resolved from the container's ports, the probe's
//     headers (a "Host" header sets the request host), "User-Agent:
//     kube-probe/1.37" and "Accept: */*" unless given; no proxy, no
//     keep-alive, TLS unverified for HTTPS. 200–399 is Success, anything
//     else Failure ("HTTP probe failed with statuscode: N"). Redirects to
//     the same host are followed (at most 10); a redirect to another host
//     is not followed and counts as Success (upstream's "warning").
//   - tcpSocket: a TCP connect to host (default pod IP):port.
//   - exec: Target.Exec runs the command in the container; exit code 0 is
//     Success, any other Failure, a timeout Failure ("command timed out").
//   - grpc: grpc.health.v1.Health/Check on podIP:port; SERVING is Success.
//
// A probe that cannot be run (an unknown named port, no Exec function, an
// error starting the command) returns an error: the Worker throws such a
// result away, as the kubelet does, after retrying it three times.
//
// A Worker probes periodically with upstream's timing: nothing during
// initialDelaySeconds (counted from the container's start), then one probe
// every periodSeconds, each bounded by timeoutSeconds. The reported result
// changes only after successThreshold consecutive successes or
// failureThreshold consecutive failures. Defaults are upstream's
// (timeout 1s, period 10s, success 1, failure 3); initial results too:
// readiness starts as Failure, liveness as Success, startup as Unknown.
// A liveness worker that reports Failure and a startup worker that
// reports any result stop probing ("on hold", as upstream until the
// container is restarted): the caller restarts the container and starts
// a new Worker for it. Running liveness and readiness only after the
// startup probe succeeded, and stopping workers of terminating pods, is
// the caller's job.
package probe

// Package agnhost is svcnet's built-in test backend: the subset of the
// upstream agnhost image (registry.k8s.io/e2e-test-images/agnhost) that the
// upstream Service, EndpointSlice, DNS and proxy e2e tests drive. The process
// pod runtime runs `svcnet agnhost <args>` for containers that name the
// agnhost image, so upstream manifests work unchanged.
//
// Each subcommand is a small server type with a Start function that binds its
// sockets before returning (so callers and tests can read the bound
// addresses, and ports 0 work) and a Wait or Close that stops it. Nothing here
// calls os.Exit or installs signal handlers: the command in cmd/svcnet wires
// SIGTERM to Netexec.Terminate, passes signal channels to Pause and
// RunServeHostname, and turns the exit codes returned here into the process
// exit status.
//
//   - netexec (Netexec): HTTP endpoints /, /hostname, /hostName, /clientip,
//     /serverport, /echo, /header, /envvar, /dial, /shell, /healthz, /readyz,
//     /exit, /shutdown, /redirect and /upload; a UDP (and optional SCTP)
//     command server answering hostname, echo, clientip, serverport and
//     envvar; --delay-shutdown (SIGTERM turns /readyz into 503 "shutting
//     down" and the process exits after the delay); --http-override.
//   - serve-hostname (ServeHostname): the hostname over HTTP, or raw over TCP
//     and/or UDP; it keeps serving for 60s after SIGTERM like upstream.
//   - porter (Porter): SERVE_PORT_N, SERVE_TCP_PORT_N, SERVE_UDP_PORT_N,
//     SERVE_TLS_PORT_N and SERVE_SCTP_PORT_N environment variables each serve
//     their value on port N.
//   - connect (Connect): one TCP, UDP or SCTP connection attempt classified
//     as UNKNOWN, TIMEOUT, DNS, REFUSED or OTHER; the message printed on
//     stderr starts with that word, like upstream, and the exit code is 1.
//   - pause (Pause): blocks until SIGINT or SIGTERM.
//
// Behaviour follows upstream agnhost v1.37's code (not only its help text),
// including its quirks that e2e tests may observe: /dial and /shell answer
// 200 whatever happened, the UDP echo reply is lower-cased, /healthz is 412
// until a UDP or SCTP server is up. Deliberate differences are listed where
// they are made: SCTP sockets are opened with plain socket(2) calls instead
// of a cgo-free third-party library; /dial ignores proxy environment
// variables; porter and the TLS servers generate a self-signed certificate
// for localhost, 127.0.0.1 and ::1 when no certificate files are given; pause
// writes its termination message only when TERMINATION_MESSAGE_PATH is set
// (never to the host's /dev).
package agnhost

#!/usr/bin/env bash
# bench/apiserver/run.sh — benchmark the svcnet API server (issue 2,
# acceptance point 7). Builds bin/svcnet and the bench program, starts
# `svcnet server` on loopback with a throwaway data dir (a real, fsync'ing
# embedded etcd on the same disk), runs bench/apiserver against it, prints the
# tables, then stops the server and removes the data dir. See bench/README.md.
#
# Exit status: 0 whenever the benchmark ran (missed goals are reported, not
# failed); non-zero only when the server could not be built, started or
# reached. Extra arguments are passed to the bench program, e.g.
#   bash bench/apiserver/run.sh -services 2000 -rate-duration 4s
# SERVER_ENV adds environment variables to the server alone (not to the
# bench client), e.g. SERVER_ENV="GOGC=200 GODEBUG=gctrace=1".
set -euo pipefail

cd "$(dirname "$0")/../.."

mkdir -p bin
echo "bench: building bin/svcnet and bin/svcnet-bench-apiserver" >&2
go build -o bin/svcnet ./cmd/svcnet
go build -o bin/svcnet-bench-apiserver ./bench/apiserver

# The data dir goes under $BENCH_TMPDIR, else $TMPDIR, else /tmp. It must be
# on a real disk (not tmpfs) for etcd's fsync to cost what it costs.
tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/svcnet-bench.XXXXXX")
server_pid=""
cleanup() {
	if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill -TERM "$server_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "$(df -P "$tmp" | awk 'NR==2 {print $1}')" == tmpfs ]]; then
	echo "bench: WARNING: $tmp is on tmpfs; fsync costs nothing there and the etcd floor is not the disk's" >&2
fi

port() { bin/svcnet-bench-apiserver -print-free-port; }
api_port=$(port)
etcd_client_port=$(port)
etcd_peer_port=$(port)
data="$tmp/data"

# Controllers (endpointslice, …) run in the server process by default; they
# are not the API server, and their reaction to every created Service would
# be counted as API cost, so the bench turns them off unless
# BENCH_CONTROLLERS is set (e.g. BENCH_CONTROLLERS='*'). A --controllers
# list without '*' enables only what it names, like kube-controller-manager's.
controllers="${BENCH_CONTROLLERS:--endpointslice}"
if [[ "$controllers" == "-endpointslice" ]]; then
	controllers_desc="controllers off"
else
	controllers_desc="--controllers=$controllers"
fi
etcd_url="https://127.0.0.1:$etcd_client_port"
server_desc="bin/svcnet server, embedded etcd (fsync on, mutual TLS on loopback), $controllers_desc"

echo "bench: starting svcnet server on 127.0.0.1:$api_port (data $data; $controllers_desc)" >&2
env ${SERVER_ENV:-} bin/svcnet server \
	--data-dir "$data" \
	--bind-address 127.0.0.1 \
	--secure-port "$api_port" \
	--embedded-etcd-client-url "$etcd_url" \
	--embedded-etcd-peer-url "https://127.0.0.1:$etcd_peer_port" \
	--controllers="$controllers" \
	>"$tmp/server.log" 2>&1 &
server_pid=$!

# Wait (bounded) for the admin kubeconfig; the bench program then waits for
# /readyz itself.
for _ in $(seq 1 600); do
	[[ -s "$data/admin.kubeconfig" ]] && break
	if ! kill -0 "$server_pid" 2>/dev/null; then
		echo "bench: svcnet server exited; its log:" >&2
		tail -n 50 "$tmp/server.log" >&2
		exit 1
	fi
	sleep 0.2
done
if [[ ! -s "$data/admin.kubeconfig" ]]; then
	echo "bench: no $data/admin.kubeconfig after 120s; server log:" >&2
	tail -n 50 "$tmp/server.log" >&2
	exit 1
fi

# --foreground keeps the bench in this shell's process group, so Ctrl-C
# reaches it (timeout otherwise moves it to a group of its own). The bench
# bounds every phase itself; the 900 s is a last resort.
status=0
timeout --foreground 900 bin/svcnet-bench-apiserver \
	-kubeconfig "$data/admin.kubeconfig" \
	-server-pid "$server_pid" \
	-server-desc "$server_desc" \
	-etcd-endpoints "$etcd_url" \
	-etcd-cafile "$data/pki/ca.crt" \
	-etcd-certfile "$data/pki/etcd-client.crt" \
	-etcd-keyfile "$data/pki/etcd-client.key" \
	"$@" || status=$?
if [[ $status -ne 0 ]]; then
	echo "bench: bench program failed (exit $status); last lines of the server log:" >&2
	tail -n 30 "$tmp/server.log" >&2
	exit "$status"
fi

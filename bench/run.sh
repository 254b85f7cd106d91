#!/usr/bin/env bash
# bench/run.sh — `make bench`: benchmark the svcnet API server (issue 2,
# acceptance point 7). Builds bin/svcnet and the bench program, starts
# `svcnet server` on loopback with a throwaway data dir (a real, fsync'ing
# embedded etcd on the same disk), runs bench/apiserver against it, prints the
# tables, then stops the server and removes the data dir. See bench/README.md.
#
# Exit status: 0 whenever the benchmark ran (missed goals are reported, not
# failed); non-zero only when the server could not be built, started or
# reached. Extra arguments are passed to the bench program, e.g.
#   bash bench/run.sh -services 2000 -rate-duration 4s
set -euo pipefail

cd "$(dirname "$0")/.."

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

echo "bench: starting svcnet server on 127.0.0.1:$api_port (data $data)" >&2
bin/svcnet server \
	--data-dir "$data" \
	--bind-address 127.0.0.1 \
	--secure-port "$api_port" \
	--embedded-etcd-client-url "http://127.0.0.1:$etcd_client_port" \
	--embedded-etcd-peer-url "http://127.0.0.1:$etcd_peer_port" \
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

status=0
timeout 900 bin/svcnet-bench-apiserver \
	-kubeconfig "$data/admin.kubeconfig" \
	-server-pid "$server_pid" \
	-etcd-endpoints "http://127.0.0.1:$etcd_client_port" \
	"$@" || status=$?
if [[ $status -ne 0 ]]; then
	echo "bench: bench program failed (exit $status); last lines of the server log:" >&2
	tail -n 30 "$tmp/server.log" >&2
	exit "$status"
fi

#!/usr/bin/env bash
# bench/run.sh — `make bench`: every svcnet benchmark, one after another, each
# printing its own tables of measured figures, goals and ratios (see
# bench/README.md and each area's README). Missed goals are reported, never
# failed; the exit status is non-zero only when a benchmark could not run.
#
#   BENCH=apiserver,dns bash bench/run.sh     # a subset
#
# Areas:
#   apiserver    creates/s vs raw etcd puts, LIST 10k, watch latency, RSS (issue 2)
#   controllers  pod Ready → EndpointSlice latency, cold-start convergence (issue 3)
#   proxy        per mode (nftables, iptables, userspace): cold sync 1k/10k, one-service change, RSS, conn rate and throughput via ClusterIP vs direct, non-service conn rate at 10 vs 10k Services, and bare-nat (one DNAT rule: the kernel NAT floor) (issues 5, 7; root, inside unshare --net)
#   dns          QPS and latency with dnsperf at 10k Services, RSS (issue 6)
#   ipvs         ipvs vs nftables cold sync (1k) and one-service change, inside the qemu VM of hack/ipvs-vm.sh (issue 9)
#   agent        100 pods on one node: create → Running+Ready p50/p99, agent + pod RSS (issue 4; root, inside unshare --net)
set -euo pipefail
cd "$(dirname "$0")/.."

areas=${BENCH:-apiserver,controllers,proxy,dns,ipvs,agent}
failed=()
run() {
	local name=$1
	shift
	[[ ",$areas," == *",$name,"* ]] || return 0
	printf '\n==================== bench: %s ====================\n' "$name"
	if ! "$@"; then
		failed+=("$name")
	fi
}

run apiserver bash bench/apiserver/run.sh
# The controller bench's cold-start phase is bounded by its own budget flags.
run controllers go run ./bench/controllers
# Kernel rows re-exec themselves under `unshare --net`: the host ruleset is
# never touched.
run proxy go run ./bench/proxy
run dns bash bench/dns/run.sh
# Re-executes itself under `unshare --net --mount`: pods, veths and routes
# live in a private network namespace.
run agent go run ./bench/agent
# Boots the VM of hack/ipvs-vm.sh (installs qemu and the Debian kernel).
run ipvs bash bench/ipvs/run.sh

if ((${#failed[@]} > 0)); then
	echo "bench: could not run: ${failed[*]}" >&2
	exit 1
fi

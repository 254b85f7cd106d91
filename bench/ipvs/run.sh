#!/usr/bin/env bash
# bench/ipvs/run.sh — issue 9's `make bench` figures: ipvs vs nftables cold
# sync of 1k Services × 10 endpoints and one-service change, measured inside
# the qemu VM of hack/ipvs-vm.sh (the host kernel has no IPVS). The VM is
# software-emulated, so only the ratios mean anything.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(BENCH=1 bash hack/ipvs-vm.sh 2>&1) || { printf '%s\n' "$out" | tail -30; exit 1; }
printf '%s\n' "$out" | grep -E '^BenchmarkSync' || true
printf '%s\n' "$out" | tr -d '\r' | awk '
/^BenchmarkSync\// {
	split($1, p, "/"); mode = p[2]; kind = p[3]; n = p[4]; sub(/-[0-9]+$/, "", n)
	for (i = 2; i <= NF; i++) if ($(i+1) == "ns/op") ns[mode "," kind "," n] = $i
}
END {
	printf "\n%-22s %12s %12s %14s\n", "step (1k Services×10)", "ipvs", "nftables", "ipvs/nftables"
	split("cold one-change", kinds, " ")
	for (k = 1; k <= 2; k++) {
		i = ns["ipvs," kinds[k] ",1000"]; f = ns["nftables," kinds[k] ",1000"]
		if (i == "" || f == "") continue
		printf "%-22s %10.0f ms %10.0f ms %14.2f\n", kinds[k], i / 1e6, f / 1e6, i / f
	}
	print "(inside a software-emulated VM: absolute times are not the host'"'"'s; goal: none, ratios reported)"
}'

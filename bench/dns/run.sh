#!/usr/bin/env bash
# bench/dns/run.sh — benchmark svcnet's cluster DNS (issue 6, acceptance
# point 5). Builds bin/svcnet and bin/svcnet-bench-dns, installs dnsperf if
# missing (Debian package), then runs the bench program: an in-process API
# server filled with 10000 Services, `svcnet dns` as its own process, and
# dnsperf on loopback. Prints tables with goals; exit status 0 whenever the
# benchmark ran (missed goals print MISS). Extra arguments go to the bench
# program, e.g.  bash bench/dns/run.sh -services 2000 -duration 5s
set -euo pipefail

cd "$(dirname "$0")/../.."

if ! command -v dnsperf >/dev/null 2>&1; then
	echo "bench-dns: installing dnsperf" >&2
	if [[ $(id -u) -eq 0 ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y dnsperf >/dev/null
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y dnsperf >/dev/null
	fi
fi

mkdir -p bin
echo "bench-dns: building bin/svcnet and bin/svcnet-bench-dns" >&2
go build -o bin/svcnet ./cmd/svcnet
go build -o bin/svcnet-bench-dns ./bench/dns

exec timeout 900 bin/svcnet-bench-dns -svcnet bin/svcnet "$@"

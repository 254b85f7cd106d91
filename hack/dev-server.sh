#!/usr/bin/env bash
# hack/dev-server.sh — run a throwaway svcnet API server for development:
# loopback only, non-default ports (16443, etcd 12379/12380), data in
# _output/dev (or $1). Does not need root. Prints the KUBECONFIG to use.
#
#   hack/dev-server.sh            # then, in another shell:
#   SVCNET_DATA_DIR=_output/dev bin/svcnet kubectl get svc
set -euo pipefail

cd "$(dirname "$0")/.."
data=${1:-_output/dev}
make build >&2
mkdir -p "$data"
echo "dev-server: data in $data; use: SVCNET_DATA_DIR=$data bin/svcnet kubectl ..." >&2
exec bin/svcnet server \
	--data-dir "$data" \
	--bind-address 127.0.0.1 \
	--secure-port 16443 \
	--embedded-etcd-client-url http://127.0.0.1:12379 \
	--embedded-etcd-peer-url http://127.0.0.1:12380

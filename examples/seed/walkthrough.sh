#!/usr/bin/env bash
# walkthrough.sh replays the seed's Service walkthrough step by step against
# a running svcnet lab (svcnet lab up --nodes 3), printing every command with
# the seed's prompt and its output:
#
#   Service-Env (3 pods serving their own IP), ClusterIP 10.97.1.1 with
#   round-robin over the pods, the headless Service answering 3 pod IPs from
#   dig @10.96.0.10, NodePort 30002 on every node's IP, and the ExternalName
#   Service giving a CNAME.
#
# Run it as root from the shell that ran `svcnet lab up` (the host has the
# routes to the pod and Service CIDRs). Environment:
#   SVCNET      the svcnet binary (default: svcnet on PATH)
#   KUBECONFIG  default: ${SVCNET_LAB_DIR:-/var/lib/svcnet-lab}/kubeconfig
#   CURLS       how many times to curl the ClusterIP (default 6)
#   WAIT        seconds to wait for pods, rules and DNS (default 120)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SVCNET=${SVCNET:-svcnet}
export KUBECONFIG=${KUBECONFIG:-${SVCNET_LAB_DIR:-/var/lib/svcnet-lab}/kubeconfig}
CURLS=${CURLS:-6}
WAIT=${WAIT:-120}
cd "$here"

kubectl() { "$SVCNET" kubectl "$@"; }

# run prints a command with the seed's prompt, then runs it.
run() {
	echo "[root@master yaml]# $*"
	"$@"
}

section() { printf '\n==> %s\n' "$*"; }

# waitfor DESC CMD...: retry CMD (quietly) until it succeeds or WAIT passes.
waitfor() {
	local desc=$1 i
	shift
	for ((i = 0; i < WAIT * 2; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	echo "walkthrough: timed out waiting for $desc" >&2
	exit 1
}

pods_ready() {
	local n
	n=$(kubectl get pods -n default -l app=service-env \
		-o jsonpath='{range .items[*]}{.status.phase}/{.status.podIP}/{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
		grep -c '^Running/[0-9].*/True$' || true)
	[ "$n" -eq 3 ]
}

endpoints_ready() {
	local n
	n=$(kubectl get endpointslices -n default -l "kubernetes.io/service-name=$1" \
		-o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}' | grep -c . || true)
	[ "$n" -eq 3 ]
}

dig_count() { # dig_count NAME N: dig answers N records
	[ "$(dig +time=2 +tries=1 @10.96.0.10 "$1" +short | grep -c .)" -eq "$2" ]
}

section "Service-Env: a Deployment of 3 pods labelled app=service-env"
run kubectl create -f Service-Env.yaml
waitfor "3 pods Running and Ready" pods_ready
run kubectl get pods -n default -o wide --show-labels
# The seed edits each nginx's index.html to the pod IP; these pods serve
# their own IP from the start.
for ip in $(kubectl get pods -n default -l app=service-env -o jsonpath='{.items[*].status.podIP}'); do
	waitfor "pod $ip answering" curl -sf -m 2 "http://$ip"
	run curl -s -m 5 "$ip"
done

section "ClusterIP"
run kubectl create -f Service-Clusterip.yaml
run kubectl get svc -n default -o wide
waitfor "3 endpoints of service-clusterip" endpoints_ready service-clusterip
run kubectl describe svc service-clusterip -n default
waitfor "10.97.1.1 answering" curl -sf -m 2 http://10.97.1.1:80
for ((i = 0; i < CURLS; i++)); do
	run curl -s -m 5 http://10.97.1.1:80
done

section "HeadLiness"
run kubectl create -f Service-Headliness.yaml
run kubectl get svc service-headliness -n default -o wide
waitfor "3 endpoints of service-headliness" endpoints_ready service-headliness
run kubectl describe svc service-headliness -n default
pod=$(kubectl get pods -n default -l app=service-env -o jsonpath='{.items[0].metadata.name}')
run kubectl exec "$pod" -n default -- cat /etc/resolv.conf
waitfor "3 A records of service-headliness" dig_count service-headliness.default.svc.cluster.local 3
run dig @10.96.0.10 service-headliness.default.svc.cluster.local +short

section "NodePort"
run kubectl create -f Service-Nodeport.yaml
run kubectl get svc -n default -o wide
# The seed curls master.host.com, work1.host.com, work2.host.com: the
# nodes' InternalIPs here.
while read -r node ip; do
	waitfor "NodePort 30002 on $node" curl -sf -m 2 "http://$ip:30002"
	echo "# node $node"
	run curl -s -m 5 "http://$ip:30002"
done < <(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')

section "ExternalName"
run kubectl create -f Service-Externalname.yaml
waitfor "the CNAME of service-externalname" sh -c 'dig +time=2 +tries=1 @10.96.0.10 service-externalname.default.svc.cluster.local +short | grep -q .'
run dig @10.96.0.10 service-externalname.default.svc.cluster.local +short

if [ "${CLEANUP:-0}" = 1 ]; then
	section "Clean up"
	run kubectl delete -f Service-Externalname.yaml -f Service-Nodeport.yaml -f Service-Headliness.yaml -f Service-Clusterip.yaml -f Service-Env.yaml
fi

// Package lab runs a multi-node svcnet cluster on one machine: `svcnet lab
// up|down|status|exec`.
//
// Every node is a network namespace ("svcnet-lab-<node>", node names master,
// work1, work2, … like the seed's hosts). The nodes share one private L2
// segment: a bridge in the calling ("host") namespace, and per node a veth
// pair whose node end is eth0 with the node's address in the segment:
//
//	host namespace                          node namespaces
//	svcnetlab0 (bridge) 192.168.77.1/24
//	  ├─ svl-master ──veth── eth0 192.168.77.10/24  svcnet-lab-master: svcnet server + svcnet agent
//	  ├─ svl-work1  ──veth── eth0 192.168.77.11/24  svcnet-lab-work1:  svcnet agent
//	  └─ svl-work2  ──veth── eth0 192.168.77.12/24  svcnet-lab-work2:  svcnet agent
//	routes: <podCIDR of node> via <node IP>   (one per node, host-gw)
//	        10.96.0.0/12 via <master IP>      (Service CIDR: master's proxy answers)
//
// The control plane (`svcnet server`, embedded etcd on the master's own
// loopback) runs in the master namespace and serves on the master's segment
// address; one `svcnet agent` per node namespace runs that node's pods,
// proxy and DNS. Between nodes the pod network is the agents' host-gw
// routing over the segment. The host gets routes for every node's podCIDR
// and for the Service CIDR, so curl and dig from the host shell reach pod
// IPs, ClusterIPs, NodePorts and the cluster DNS (10.96.0.10) like the
// seed's [root@master] prompt. kubectl uses <data-dir>/kubeconfig (the admin
// kubeconfig pointed at the master's segment address).
//
// The processes are detached (own session, output in <data-dir>/logs, pid
// files in <data-dir>/run), so `lab up` returns once every node is Ready.
// The lab's state (addresses, names, routes, pids) is <data-dir>/lab.json.
// `lab down` stops the agents (SIGTERM: each stops its pods and removes its
// network) and then the server, kills any process left in a node namespace
// or running from the data dir, and removes the routes, links and
// namespaces. It works from lab.json, and without it from the fixed name
// prefixes, so it also cleans up after a lab up that failed half-way.
//
// Everything is created in the caller's network namespace and below it, so
// the lab works the same inside a private namespace (the e2e tests run it in
// one) as on a host.
package lab

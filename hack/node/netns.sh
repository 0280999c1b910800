#!/usr/bin/env bash
# Runs a command inside a network namespace made for it, with no route out of it, then removes the namespace.
#
#   bash hack/node/netns.sh COMMAND [ARGS...]
#
# The node tier (API server, kubelet, containerd, pods, SeaweedFS, Prometheus) runs in there: its only interface is
# loopback, which also carries the node's address (SIL_NODE_IP, default 10.250.0.1/32, exported to the command; this
# kernel has no dummy interfaces), plus the pods' bridge and veth pairs the CNI plugin adds inside it. There is no
# default route and no interface that leads off this machine, checked before the command starts: nothing started in
# there can send a packet elsewhere.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: netns.sh COMMAND [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "netns.sh: needs root (ip netns add); run as root or with sudo" >&2; exit 1; }
command -v ip >/dev/null || { echo "netns.sh: ip is missing: apt-get install iproute2" >&2; exit 1; }

NODE_IP=${SIL_NODE_IP:-10.250.0.1}
ns=sil-node-$$
ip netns add "$ns"
# On the way out, whatever still runs in the namespace (a container's shim or process left by a killed test run)
# is killed before the namespace goes.
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip -n "$ns" link set lo up
ip -n "$ns" addr add "${NODE_IP}/32" dev lo

routes=$(ip -n "$ns" route show default; ip -n "$ns" -6 route show default)
if [ -n "$routes" ]; then
  echo "netns.sh: refusing to run: namespace $ns has a default route: $routes" >&2
  exit 1
fi
links=$(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -v -x -e lo || true)
if [ -n "$links" ]; then
  echo "netns.sh: refusing to run: namespace $ns has interfaces besides lo: $links" >&2
  exit 1
fi
echo "netns.sh: $ns (node ${NODE_IP}; routes: $(ip -n "$ns" route show | tr '\n' ';'))" >&2
# nsenter joins the network namespace only: `ip netns exec` would also remount /sys, hiding the cgroup mounts the
# kubelet needs.
nsenter --net="/var/run/netns/$ns" env SIL_NODE_IP="$NODE_IP" SIL_NETNS="$ns" "$@"

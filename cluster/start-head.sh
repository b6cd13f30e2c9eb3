#!/usr/bin/env bash
# Start the head node of an on-prem Ray cluster, token authentication on.
#
#   cluster/start-head.sh PRIVATE_IP [more `ray start` flags, e.g. --num-cpus 0]
#
# PRIVATE_IP is this machine's address on the cluster's private network: the workers join the cluster there
# (port 6379). The dashboard and its Jobs API (port 8265) listen on 127.0.0.1, reached through an SSH tunnel,
# unless RAY_DASHBOARD_HOST names another private address that the clients can reach.
# The token is ~/.ray/auth_token (or the file in RAY_AUTH_TOKEN_PATH): the same file, mode 600, on every node
# and client. Ray refuses every call without it: the Jobs API, the dashboard, the cluster's own RPCs.
# The tracking server's address and credentials: ~/.config/resnet-studies/node.env (see lib.sh).
# `ray job stop` sends the job's driver SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S seconds, read by the
# job supervisor on this node: 120 here (Ray's default is 3), so that a stopped sweep can close its runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: $0 PRIVATE_IP [ray start flags...]"
node_ip=$1; shift
dashboard_host=${RAY_DASHBOARD_HOST:-127.0.0.1}
require_private_address "$node_ip"
require_private_address "$dashboard_host"
require_ray_token
load_node_env
echo "Ray: token authentication on; the cluster on $node_ip:${RAY_PORT:-6379}, the Jobs API on $dashboard_host:8265"
export RAY_USAGE_STATS_ENABLED=0 RAY_JOB_STOP_WAIT_TIME_S=${RAY_JOB_STOP_WAIT_TIME_S:-120}
exec ray start --head --node-ip-address "$node_ip" --port "${RAY_PORT:-6379}" \
    --dashboard-host "$dashboard_host" --dashboard-port 8265 --disable-usage-stats "$@"

#!/usr/bin/env bash
# Start a worker node of an on-prem Ray cluster and join it to the head, token authentication on.
#
#   cluster/start-worker.sh HEAD_IP PRIVATE_IP [more `ray start` flags, e.g. --num-gpus 4]
#
# HEAD_IP: the address the head was started with; PRIVATE_IP: this machine's address on the same private
# network. The token: the same ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH) as on the head, mode 600.
# The tracking server's address and credentials: ~/.config/resnet-studies/node.env, as on the head.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || die "usage: $0 HEAD_IP PRIVATE_IP [ray start flags...]"
head_ip=$1 node_ip=$2; shift 2
require_private_address "$head_ip"
require_private_address "$node_ip"
require_ray_token
load_node_env
echo "Ray: token authentication on; joining $head_ip:${RAY_PORT:-6379} as $node_ip"
export RAY_USAGE_STATS_ENABLED=0
exec ray start --address "$head_ip:${RAY_PORT:-6379}" --node-ip-address "$node_ip" --disable-usage-stats "$@"

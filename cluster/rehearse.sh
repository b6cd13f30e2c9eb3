#!/usr/bin/env bash
# Rehearse the on-prem recipe on one machine, for real: `bash cluster/rehearse.sh` (as root, 3-4 minutes).
#
# Builds a 3-node Ray cluster in Linux network namespaces: a head and two workers, each with its own address
# on a bridge that lives in a namespace of its own, plus a client namespace. No namespace has a default route:
# all traffic stays between these namespaces (and their loopbacks). Then, with the scripts of this directory:
#   - on the head: PostgreSQL (Unix socket only), cluster/tracking-server.sh (basic auth, generated admin
#     password, --allowed-hosts, bound to the head's private address), cluster/start-head.sh (token auth);
#     on the workers: cluster/start-worker.sh. One token, generated here, copied to every node and the client;
#     each node's node.env holds the tracking server's address and the credentials of an MLflow user 'sweep'.
#   - from the client: a client without the token is refused by Ray's Jobs API (and cannot join the cluster as
#     a node), one without MLflow credentials gets 401; then `ray job submit` runs the (shortened) smoke depth study; trials must run
#     on both workers, every MLflow run end FINISHED, every metric step be logged once;
#   - a trial of 2 data-parallel Ray Train workers (--workers-per-trial 2, gloo over the bridge), one on each
#     worker node: one MLflow run, every step once;
#   - the study again, and a worker node is killed (every process in its namespace: raylet, workers, agents)
#     mid-sweep: its trial must resume on the surviving worker from its last checkpoint, in the same MLflow run.
# Checkpoints go to a directory every namespace sees (the machine's file system stands in for NFS).
# Secrets (Ray token, passwords, keys) are generated into mode-700 directories, must appear in no log, and
# are deleted at the end.
# Every namespace, the bridge and every process started here are removed at the end, also when a step fails.
# Ends with one summary line, or exits non-zero naming the step that failed and showing the end of that step's
# log (its logs are then kept, nothing else). The project's environment: .venv, or the one in REHEARSAL_VENV.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${REHEARSAL_VENV:-$repo/.venv}/bin
started=$(date +%s)
step="checking prerequisites"

head_ip=10.77.0.10 w1_ip=10.77.0.11 w2_ip=10.77.0.12 client_ip=10.77.0.20
declare -A address=([head]=$head_ip [w1]=$w1_ip [w2]=$w2_ip [client]=$client_ip)
prefix=rehearsal-$$  # namespace names: rehearsal-PID-head, ... and rehearsal-PID-net for the bridge
namespaces=()
run="" pg="" pgbin=""
# The shortened smoke study (cf. tests/test_faults.py): depth 8, synthetic data, 2 families x 2 seeds.
study=(sweeps/depth_vs_error.py --preset smoke --dataset synthetic --depths 8 --seeds 2 --eval-every 3
       --set optim.batch_size=32 --set run.probe_images=16 --cpus-per-trial 1 --no-report)
iterations=12 loss_iterations=90 trials=4

say() { echo "[$(( $(date +%s) - started ))s] $*"; }
exec 3>&2  # the terminal's stderr: fail writes there even from inside a redirected command
fail() { echo "$*" >&3; exit 1; }

cleanup() {
    local status=$1
    trap - EXIT INT TERM
    set +e
    if [ -n "$pg" ] && [ -f "$pg/data/postmaster.pid" ]; then  # a fast shutdown frees its shared memory
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -m fast -w -t 20 stop >/dev/null 2>&1
    fi
    for ns in "${namespaces[@]}"; do kill_node "${ns#"$prefix-"}"; done  # nothing here needs a graceful stop
    for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null; done
    if [ -n "$run" ]; then
        if [ "$status" -eq 0 ]; then
            rm -rf "$run"
        else  # keep the logs only: the rest holds secrets (tokens, node.env), databases, checkpoints
            find "$run" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
            echo "logs kept in $run/logs" >&2
        fi
    fi
    if [ "$status" -ne 0 ]; then
        echo "rehearsal failed at step: $step" >&2
        # A step's commands write to its log, not the terminal: show why it failed.
        local latest
        latest=$(ls -t "$run"/logs/* 2>/dev/null | head -n 1)
        if [ -n "$latest" ] && [ -s "$latest" ]; then
            echo "the end of its log, $latest:" >&2
            tail -n 15 "$latest" | sed 's/^/    /' >&2
        fi
    fi
    exit "$status"
}
trap 'cleanup $?' EXIT
trap 'exit 143' INT TERM

in_ns() { local node=$1; shift; ip netns exec "$prefix-$node" "$@"; }
# Run in a node's namespace with that node's copy of the Ray token and its node.env.
on_node() {
    local node=$1; shift
    RAY_AUTH_TOKEN_PATH=$run/$node/auth_token RESNET_STUDIES_NODE_ENV=$run/$node/node.env in_ns "$node" "$@"
}
# The client reads the runs as MLflow user 'sweep'.
as_sweep_user() {
    export MLFLOW_TRACKING_URI=http://$head_ip:5000 MLFLOW_TRACKING_USERNAME=sweep
    export MLFLOW_TRACKING_PASSWORD=$(< "$run/secrets/sweep_password")
}
# A node dies: every process in its namespace killed (again, until none is left: the raylet may be forking one).
kill_node() {
    local deadline=$(( $(date +%s) + 30 )) pids
    while pids=$(ip netns pids "$prefix-$1" 2>/dev/null) && [ -n "$pids" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "processes of node $1 survive SIGKILL: $pids" >&2; return 1; }
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
}
# Wait until a command succeeds: wait_for SECONDS WHAT COMMAND... (the command's output is dropped; a fail in it
# still reaches the terminal)
wait_for() {
    local seconds=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what did not happen within ${seconds}s"
        sleep 1
    done
}

[ -x "$bin/ray" ] && [ -x "$bin/mlflow" ] || fail "no $bin/ray or $bin/mlflow: install the project into .venv" \
    "first (bash scripts/test.sh does, with the test extras)"
"$bin/python" -c "import psycopg" 2>/dev/null || fail "no psycopg in $bin/python: the tracking server's PostgreSQL" \
    "driver is the project's \`server\` extra: $bin/pip install -e \".[server]\" (bash scripts/test.sh installs it)"
[ "$(id -u)" -eq 0 ] || fail "cluster/rehearse.sh needs root: it creates network namespaces and a bridge"
command -v ip >/dev/null || fail "no 'ip' command: apt-get install -y iproute2"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || fail "no PostgreSQL server: apt-get install -y postgresql"
export PATH="$bin:$PATH" RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
unset RAY_ADDRESS RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD

run=$(mktemp -d /tmp/rehearsal.XXXXXX)
chmod 711 "$run"  # PostgreSQL runs as its own user and must reach $run/pg
mkdir -m 700 "$run/secrets" "$run/logs"
shared=$run/shared  # "shared storage": checkpoints and MLflow artifacts
mkdir -p "$shared"

step="network namespaces"
namespaces+=("$prefix-net")
ip netns add "$prefix-net"
ip -n "$prefix-net" link add br0 type bridge
ip -n "$prefix-net" link set br0 up
for node in head w1 w2 client; do
    namespaces+=("$prefix-$node")
    ip netns add "$prefix-$node"
    ip -n "$prefix-net" link add "$node" type veth peer name eth0 netns "$prefix-$node"
    ip -n "$prefix-net" link set "$node" master br0 up
    ip -n "$prefix-$node" link set lo up
    ip -n "$prefix-$node" link set eth0 up
    ip -n "$prefix-$node" address add "${address[$node]}/24" dev eth0
    [ -z "$(ip -n "$prefix-$node" route show default)" ] || fail "namespace $node has a default route"
    mkdir -m 700 "$run/$node"
done
say "network: head $head_ip, workers $w1_ip $w2_ip, client $client_ip on a private bridge, no default route"

step="secrets"
(
    umask 077
    openssl rand -hex 32 > "$run/secrets/ray_token"
    for secret in admin_password sweep_password db_password; do openssl rand -hex 16 > "$run/secrets/$secret"; done
    openssl rand -hex 32 > "$run/secrets/flask_key"
    printf '*:*:*:mlflow:%s\n' "$(< "$run/secrets/db_password")" > "$run/secrets/pgpass"
    # "one token distributed to every node and client": each gets its own copy, mode 600
    for node in head w1 w2 client; do cp "$run/secrets/ray_token" "$run/$node/auth_token"; done
    # what every node's Ray processes (the job's driver, the trials) need to log to the tracking server
    for node in head w1 w2; do
        printf 'MLFLOW_TRACKING_URI=http://%s:5000\nMLFLOW_TRACKING_USERNAME=sweep\nMLFLOW_TRACKING_PASSWORD=%s\n%s\n%s\n' \
            "$head_ip" "$(< "$run/secrets/sweep_password")" \
            "RESNET_STUDIES_SHARED_STORAGE=1  # $shared is one directory that every namespace sees" \
            "GLOO_SOCKET_IFNAME=eth0  # gloo's interface: the host name resolves outside the namespace" \
            > "$run/$node/node.env"
    done
)

step="PostgreSQL on the head"
pg=$run/pg
mkdir -m 700 "$pg"
chown postgres: "$pg"
runuser -u postgres -- "$pgbin/initdb" -D "$pg/data" -U postgres -E UTF8 --no-locale --auth-local=peer \
    --auth-host=reject > "$run/logs/initdb.log" 2>&1
# The superuser by peer authentication, the mlflow role by password; no TCP at all (listen_addresses='').
printf 'local all postgres peer\nlocal mlflow,mlflow_auth mlflow scram-sha-256\n' > "$pg/data/pg_hba.conf"
in_ns head runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 \
    -o "-c listen_addresses='' -k $pg" start > "$run/logs/pg_ctl.log" 2>&1
{
    printf "CREATE ROLE mlflow LOGIN PASSWORD '%s';\n" "$(< "$run/secrets/db_password")"
    printf 'CREATE DATABASE mlflow OWNER mlflow;\nCREATE DATABASE mlflow_auth OWNER mlflow;\n'
} | in_ns head runuser -u postgres -- "$pgbin/psql" -h "$pg" -d postgres -q -v ON_ERROR_STOP=1 > "$run/logs/psql.log" 2>&1

step="MLflow tracking server on the head"
# It starts in the background (its first start creates the tables), while Ray starts.
(
    export PGPASSFILE=$run/secrets/pgpass
    export MLFLOW_BACKEND_STORE_URI="postgresql://mlflow@/mlflow?host=$pg"
    export MLFLOW_AUTH_DATABASE_URI="postgresql://mlflow@/mlflow_auth?host=$pg"
    export MLFLOW_ARTIFACTS_DESTINATION=$shared/mlartifacts MLFLOW_AUTH_CONFIG_PATH=$run/head/mlflow-auth.ini
    export MLFLOW_AUTH_ADMIN_PASSWORD=$(< "$run/secrets/admin_password")
    export MLFLOW_FLASK_SERVER_SECRET_KEY=$(< "$run/secrets/flask_key") MLFLOW_WORKERS=1
    cd "$run/head"
    exec ip netns exec "$prefix-head" "$repo/cluster/tracking-server.sh" "$head_ip" 5000
) > "$run/logs/mlflow-server.log" 2>&1 &
tracking_server=$!
disown "$tracking_server"  # it is killed with its namespace; no "Killed" notice after the summary line
tracking_server_up() {
    kill -0 "$tracking_server" 2>/dev/null || fail "the tracking server stopped: $(tail -n 5 "$run/logs/mlflow-server.log")"
    in_ns client curl -sf "http://$head_ip:5000/health"
}
step="Ray head and workers"
RAY_DASHBOARD_HOST=$head_ip on_node head "$repo/cluster/start-head.sh" "$head_ip" --num-cpus 0 \
    --object-store-memory 100000000 --temp-dir "$run/head/ray" > "$run/logs/ray-head.log" 2>&1
starting=()
for node in w1 w2; do
    on_node "$node" "$repo/cluster/start-worker.sh" "$head_ip" "${address[$node]}" --num-cpus 1 \
        --object-store-memory 100000000 --temp-dir "$run/$node/ray" > "$run/logs/ray-$node.log" 2>&1 &
    starting+=($!)
done
for pid in "${starting[@]}"; do wait "$pid"; done
nodes=$(on_node client env RAY_AUTH_MODE=token python "$repo/cluster/rehearsal.py" wait-nodes \
    "http://$head_ip:8265" 3)
say "Ray cluster: nodes $nodes; Jobs API on $head_ip:8265, token auth on"

step="MLflow tracking server on the head"
wait_for 120 "the tracking server answering on $head_ip:5000" tracking_server_up
(
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$(< "$run/secrets/admin_password")
    in_ns client python "$repo/cluster/rehearsal.py" create-user "http://$head_ip:5000" sweep \
        "$run/secrets/sweep_password"
) > "$run/logs/mlflow-user.log" 2>&1
say "tracking server: http://$head_ip:5000, PostgreSQL backend, basic auth (admin + user 'sweep')"

step="unauthenticated clients"
# No token anywhere: another HOME (no ~/.ray/auth_token), no RAY_AUTH_TOKEN(_PATH), token auth not asked for.
if in_ns client env HOME="$run/client" RAY_AUTH_MODE=disabled \
        ray job submit --address "http://$head_ip:8265" -- echo unauthenticated-job > "$run/logs/refused-submit.log" 2>&1; then
    fail "a job submitted without the token was accepted"
fi
grep -q "Unauthorized" "$run/logs/refused-submit.log" || fail "ray job submit without the token failed, but not" \
    "with 'Unauthorized': $(tail -n 3 "$run/logs/refused-submit.log")"
(
    as_sweep_user
    in_ns client python "$repo/cluster/rehearsal.py" refused --ray "http://$head_ip:8265" --mlflow "http://$head_ip:5000"
)
if on_node client env RAY_AUTH_MODE=token ray job list --address "http://$head_ip:8265" 2>&1 | grep -q unauthenticated-job; then
    fail "the job submitted without the token exists"
fi
# Nor can a machine without the token join the cluster as a node: the cluster's own RPCs need the token too.
if in_ns client env HOME="$run/client" RAY_AUTH_MODE=disabled timeout 120 ray start --address "$head_ip:6379" \
        --node-ip-address "$client_ip" --num-cpus 1 --object-store-memory 100000000 --temp-dir "$run/client/ray" \
        > "$run/logs/refused-join.log" 2>&1; then
    fail "a node without the token joined the cluster"
fi
grep -q "AuthenticationError" "$run/logs/refused-join.log" || fail "a node without the token was not refused" \
    "for its token: $(tail -n 3 "$run/logs/refused-join.log")"
kill_node client || fail "what the refused node left behind could not be killed"
say "refused: ray job submit without the token (401), a wrong token (403), a node without the token joining the cluster; MLflow without credentials or with a wrong password (401), a foreign Host header (403)"

# The README's command: ray job submit --working-dir <repo> -- python sweeps/depth_vs_error.py ...
submit() {
    local id=$1; shift
    RAY_ADDRESS=http://$head_ip:8265 RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$run/client/auth_token \
        in_ns client timeout 400 ray job submit --submission-id "$id" --working-dir "$repo" -- python "$@"
}

step="the smoke depth study on 3 nodes"
submit "rehearsal-$$-sweep" "${study[@]}" --iterations "$iterations" --experiment rehearsal \
    --storage-path "$shared/ray_results" > "$run/logs/sweep.log" 2>&1 \
    || fail "the sweep job failed: $(tail -n 5 "$run/logs/sweep.log")"
(
    as_sweep_user
    in_ns client python "$repo/cluster/rehearsal.py" check-sweep "$MLFLOW_TRACKING_URI" rehearsal \
        --trials "$trials" --iterations "$iterations" --eval-every 3 --min-nodes 2
)
say "sweep: $trials trials, every run FINISHED, every metric step once"

step="a 2-worker trial across 2 nodes"
# Each worker node has 1 CPU and each Ray Train worker asks for 0.75 (--cpus-per-trial 1.5 split in two): the two
# workers of the trial can only run one on each node, talking gloo over the bridge.
submit "rehearsal-$$-workers" "${study[@]}" --iterations "$iterations" --families residual --seeds 1 \
    --workers-per-trial 2 --cpus-per-trial 1.5 --experiment rehearsal-workers --storage-path "$shared/ray_results" \
    > "$run/logs/workers.log" 2>&1 || fail "the 2-worker job failed: $(tail -n 5 "$run/logs/workers.log")"
for ip in "$w1_ip" "$w2_ip"; do
    grep -q "RayTrainWorker pid=[0-9]*, ip=$ip)" "$run/logs/workers.log" \
        || fail "no Ray Train worker of the 2-worker trial ran on $ip: $(grep -m 3 RayTrainWorker "$run/logs/workers.log")"
done
(
    as_sweep_user
    in_ns client python "$repo/cluster/rehearsal.py" check-sweep "$MLFLOW_TRACKING_URI" rehearsal-workers \
        --trials 1 --iterations "$iterations" --eval-every 3 --min-nodes 1
)
say "2-worker trial: its workers on $w1_ip and $w2_ip, one MLflow run, every metric step once"

step="node loss"
submit "rehearsal-$$-node-loss" "${study[@]}" --iterations "$loss_iterations" --max-failures 2 \
    --experiment rehearsal-node-loss --storage-path "$shared/ray_results" > "$run/logs/node-loss.log" 2>&1 &
job=$!
# Wait for a trial on w1 with at least two evaluations (so checkpoints) behind it, then kill the whole node.
victim=$(as_sweep_user; in_ns client python "$repo/cluster/rehearsal.py" wait-trial-on "$MLFLOW_TRACKING_URI" \
    rehearsal-node-loss "$w1_ip" --min-step 6)
read -r victim_run _ victim_name <<< "$victim"
kill_node w1 || fail "node w1 could not be killed"
killed_after=$(as_sweep_user; in_ns client python "$repo/cluster/rehearsal.py" last-step "$MLFLOW_TRACKING_URI" "$victim_run")
say "killed node w1 ($w1_ip: raylet, workers, agents) while '$victim_name' was at iteration $killed_after"
wait "$job" || fail "the sweep job failed after the node loss: $(tail -n 5 "$run/logs/node-loss.log")"
(
    as_sweep_user
    in_ns client python "$repo/cluster/rehearsal.py" check-sweep "$MLFLOW_TRACKING_URI" rehearsal-node-loss \
        --trials "$trials" --iterations "$loss_iterations" --eval-every 3 --moved "$victim_run" --lost "$w1_ip" \
        --killed-after "$killed_after"
)
say "node loss: nothing lost or duplicated, every run FINISHED"

step="no secret in any log"
for secret in ray_token admin_password sweep_password db_password flask_key; do
    # Everything the rehearsal wrote (logs of Ray, MLflow, PostgreSQL and the jobs, checkpoints, artifacts) but
    # the files that hold secrets. The pattern is read from a file: on grep's command line it would show in `ps`.
    if grep -rlF -f "$run/secrets/$secret" "$run" --exclude-dir=secrets --exclude=auth_token --exclude=node.env >&2
    then
        fail "the $secret appears in the files above"
    fi
done
say "no token, password or key in any log, checkpoint or artifact"

step="summary"
say "wall time $(( $(date +%s) - started ))s"
echo "rehearsal: $(wc -w <<< "$nodes") nodes, $(( 2 * trials )) trials and a 2-worker trial, node loss survived, unauthenticated clients refused"

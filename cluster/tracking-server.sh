#!/usr/bin/env bash
# The MLflow tracking server for a cluster: PostgreSQL backend, an artifact store, basic auth, a private address.
#
#   export MLFLOW_BACKEND_STORE_URI=postgresql://mlflow@db.internal/mlflow       # runs, metrics, params
#   export MLFLOW_AUTH_DATABASE_URI=postgresql://mlflow@db.internal/mlflow_auth  # users and permissions
#   export MLFLOW_ARTIFACTS_DESTINATION=s3://bucket/mlflow                      # or a directory on shared storage
#   export MLFLOW_AUTH_ADMIN_PASSWORD=$(openssl rand -hex 16)                   # first start only; keep it safe
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=$(openssl rand -hex 32)               # signs the UI's CSRF tokens
#   cluster/tracking-server.sh PRIVATE_IP [PORT]                                 # default port 5000
#
# Database passwords never go into the URIs (they would show in `ps` and in logs): put them in ~/.pgpass
# (mode 600) or the file named by PGPASSFILE. Trials and clients send artifacts through the server
# (--serve-artifacts), so only this machine needs credentials for the artifact store.
# Every request needs a user name and password, except /health. The admin user is created with
# MLFLOW_AUTH_ADMIN_PASSWORD the first time the server starts on an empty user store (MLflow refuses to start
# there without it); later starts find the admin in the store and need no password in their environment, so
# leave it out of the service's environment once the admin exists (setting it later does not change the admin's
# password: change that as admin, through the server). Create one user per person or service (cluster/README.md).
# Requests whose Host header is not PRIVATE_IP:PORT, or 127.0.0.1:PORT / localhost:PORT (the local end of an SSH
# tunnel with the same port, cluster/README.md), or a name in MLFLOW_ALLOWED_HOSTS (comma-separated), are
# refused, against DNS rebinding. The server speaks plain HTTP: put a TLS proxy in front of it before any
# traffic leaves a network you trust.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: $0 PRIVATE_IP [PORT]"
host=$1 port=${2:-5000}
require_private_address "$host"
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_ARTIFACTS_DESTINATION \
            MLFLOW_FLASK_SERVER_SECRET_KEY; do
    [ -n "${!name:-}" ] || die "set $name (see the top of $0)"
done
for uri in "$MLFLOW_BACKEND_STORE_URI" "$MLFLOW_AUTH_DATABASE_URI"; do
    case $uri in
        *://*:*@*) die "a database URI holds a password: put it in ~/.pgpass (or PGPASSFILE) instead" ;;
    esac
done
if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
    [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 16 ] || die "MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 16 characters"
    echo "MLflow auth: MLFLOW_AUTH_ADMIN_PASSWORD is set: it creates the admin user if the user store has none"
else
    unset MLFLOW_AUTH_ADMIN_PASSWORD  # set but empty would read as "no password" all the same
    echo "MLflow auth: no MLFLOW_AUTH_ADMIN_PASSWORD: the admin user must exist in the user store already" \
        "(a first start, on an empty store, needs it; see the top of $0)"
fi
[ ${#MLFLOW_FLASK_SERVER_SECRET_KEY} -ge 32 ] || die "MLFLOW_FLASK_SERVER_SECRET_KEY is shorter than 32 characters"

# The auth app's settings (no secret in them), rewritten at every start.
auth_config=${MLFLOW_AUTH_CONFIG_PATH:-${XDG_CONFIG_HOME:-$HOME/.config}/resnet-studies/mlflow-auth.ini}
mkdir -p "$(dirname "$auth_config")"
(umask 077; cat > "$auth_config") <<INI
[mlflow]
# authenticated users may read every experiment; only its creator (and admins) may change or delete it
default_permission = READ
database_uri = $MLFLOW_AUTH_DATABASE_URI
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# A password check (scrypt) costs ~0.25 s of CPU: without this cache every request of every trial pays it.
# The price: a changed or deleted password is still accepted for up to this many seconds. 0 turns it off.
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI
# No server-side job execution (GenAI evaluation jobs, unused here): no extra process, no queue in /dev/shm.
export MLFLOW_AUTH_CONFIG_PATH=$auth_config MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# The server's address, and the local end of an SSH tunnel (`ssh -N -L PORT:PRIVATE_IP:PORT ...`): a Host header
# of 127.0.0.1 or localhost cannot come from a rebound DNS name. Never `*`.
case ",${MLFLOW_ALLOWED_HOSTS:-}," in
    *'*'*) die "MLFLOW_ALLOWED_HOSTS=$MLFLOW_ALLOWED_HOSTS holds '*': that admits any Host header (DNS rebinding); name the hosts" ;;
esac
allowed_hosts="$host:$port,$host,127.0.0.1:$port,localhost:$port${MLFLOW_ALLOWED_HOSTS:+,$MLFLOW_ALLOWED_HOSTS}"
exec mlflow server --app-name basic-auth \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --host "$host" --port "$port" --allowed-hosts "$allowed_hosts" \
    --workers "${MLFLOW_WORKERS:-4}"

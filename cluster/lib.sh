# Shared by the cluster scripts (sourced, not run): refuse unsafe settings before anything starts.

die() { echo "error: $*" >&2; exit 2; }

# A file holding secrets must be readable by its owner only.
require_private_file() {
    case $(stat -c %a "$1") in
        ?00) ;;
        *) die "$1 can be read by other users: chmod 600 $1" ;;
    esac
}

# The Ray token: RAY_AUTH_TOKEN, else the file in RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own
# order). Turns token authentication on for what runs next.
require_ray_token() {
    if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
        local file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
        [ -s "$file" ] || die "no Ray token in $file. Make one, readable by you only, with" \
            "\`(umask 077 && mkdir -p ~/.ray && ray get-auth-token --generate > /dev/null)\` (or" \
            "\`(umask 077 && mkdir -p ~/.ray && openssl rand -hex 32 > ~/.ray/auth_token)\`), then copy that" \
            "file, mode 600, to every node and client"
        require_private_file "$file"
    fi
    export RAY_AUTH_MODE=token
}

# The node's environment file (RESNET_STUDIES_NODE_ENV, default ~/.config/resnet-studies/node.env, mode 600):
# MLFLOW_TRACKING_URI / _USERNAME / _PASSWORD, RESNET_STUDIES_SHARED_STORAGE=1, ... Every Ray process of the
# node inherits it, so trials log to the tracking server without credentials in any job's runtime_env
# (Ray writes a job's runtime_env, env_vars included, into runtime_env_agent.log on every node).
load_node_env() {
    local file=${RESNET_STUDIES_NODE_ENV:-$HOME/.config/resnet-studies/node.env}
    if [ -f "$file" ]; then
        require_private_file "$file"
        set -a
        . "$file"
        set +a
    fi
    if [ -n "${MLFLOW_TRACKING_PASSWORD:-}" ]; then
        echo "MLflow: $MLFLOW_TRACKING_URI as user ${MLFLOW_TRACKING_USERNAME:-?} (from $file)"
    else
        echo "MLflow: no credentials in $file: trials on this node cannot log to an authenticating tracking server"
    fi
}

# An address to listen on must be loopback or private (10/8, 172.16/12, 192.168/16, fc00::/7), never 0.0.0.0.
require_private_address() {
    python3 - "$1" <<'PY' || die "$1 is not a loopback or private address: bind to the cluster's private network"
import ipaddress, sys
try:
    address = ipaddress.ip_address(sys.argv[1])
except ValueError:
    sys.exit(1)
sys.exit(0 if (address.is_private or address.is_loopback) and not address.is_unspecified else 1)
PY
}

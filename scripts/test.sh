#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine: Debian's headless Chromium for the browser tests and
# PostgreSQL, iproute2 and openssl for the cluster rehearsal, a virtual environment with the project and its test
# extras, then pytest. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)   # the browser tests
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # cluster/rehearse.sh
command -v ip >/dev/null 2>&1 || missing+=(iproute2)                           # cluster/rehearse.sh
command -v openssl >/dev/null 2>&1 || missing+=(openssl)                       # cluster/rehearse.sh
command -v curl >/dev/null 2>&1 || missing+=(curl)                             # cluster/rehearse.sh
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian's ${missing[*]}"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[test]"
export MLFLOW_DISABLE_TELEMETRY=true  # no usage pings from the test suite
exec .venv/bin/python -m pytest "$@"

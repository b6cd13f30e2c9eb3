#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine: Debian's headless Chromium for the browser tests,
# a virtual environment with the project and its test extras, then pytest. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[test]"
export MLFLOW_DISABLE_TELEMETRY=true  # no usage pings from the test suite
exec .venv/bin/python -m pytest "$@"

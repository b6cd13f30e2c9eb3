#!/usr/bin/env bash
# Write cluster/constraints.txt from the virtualenv the test suite passed in (.venv): the exact versions the
# cluster recipes install with. Run after moving a pin in pyproject.toml and a green `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# The versions the test suite passed with (pip freeze of its virtualenv, Python 3.11, Linux x86-64): what the"
    echo "# cluster recipes install with (pip install -c cluster/constraints.txt -e .), so every node computes with the"
    echo "# same packages as CI. Regenerate after moving a pin: bash scripts/freeze-constraints.sh"
    .venv/bin/pip freeze --exclude-editable | grep -v '^-e \|^#'
} > cluster/constraints.txt

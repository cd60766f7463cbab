#!/usr/bin/env bash
# Set up .venv and run keylife serve on embedded defaults with a simulated DataFold network.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
exec .venv/bin/keylife serve --demo "$@"

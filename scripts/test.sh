#!/usr/bin/env bash
# Set up .venv with the dev tools, then run ruff and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_EXTRA=dev . scripts/venv.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"

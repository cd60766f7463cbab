#!/usr/bin/env bash
# Run every benchmark: JSON on stdout (saved to bench/results/), README table rewritten.
#   bash bench/run.sh [--quick] [--only NAME] [--no-readme] [--output PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  . scripts/venv.sh
fi
exec .venv/bin/python -m bench "$@"

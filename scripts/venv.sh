# Sourced by demo.sh and test.sh: make .venv (installing python3-venv on Debian if it is
# missing and we may) and install keylife into it. Set VENV_EXTRA=dev for the test tools.
set -euo pipefail
extra="${VENV_EXTRA:-}"
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
      echo "python3 -m venv failed: install python3-venv (Debian/Ubuntu) and retry" >&2; exit 1
    fi
    python3 -m venv .venv
  fi
fi
stamp=".venv/.installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra:+[$extra]}"
  touch "$stamp"
fi

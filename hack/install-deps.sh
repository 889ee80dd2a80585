#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: Debian packages (Prometheus with
# promtool, shellcheck) and the Python packages from pyproject.toml. Idempotent.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${need_apt[*]}; install them (sudo apt-get install -y ${need_apt[*]})" >&2
    exit 1
  fi
  echo "Installing Debian packages: ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian's package may start a daemon; the tests start their own Prometheus.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
  pkill -x prometheus >/dev/null 2>&1 || true
fi

python3 -m pip install -q --disable-pip-version-check -e "${repo}[test]"

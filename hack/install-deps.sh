#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: Debian packages (promtool and
# the shell linter; the real node's containerd, runc, CNI plugins and iptables; buildah, debootstrap
# and a static C toolchain for the images built here) and the Python packages from
# pyproject.toml. Idempotent.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need_apt=()
# The UI's browser tests (tests/integration/test_ui.py) drive Debian's chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# The real node (hack/node.sh) and the images it runs (hack/images.sh).
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need_apt+=(libc6-dev)
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

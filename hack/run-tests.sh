#!/usr/bin/env bash
# Runs the whole suite against the local control plane, which it starts (or reuses).
# pytest's exit code 5 (no tests collected) is a failure here, never a pass.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}" || exit 1

hack/cluster.sh up >/dev/null || { echo "error: the local control plane did not start" >&2; exit 1; }
export KUBECONFIG="${KUBELOOP_CLUSTER_DIR:-${repo}/.cluster}/kubeconfig"

rc=0
python3 -m pytest "$@" || rc=$?
if [ "${rc}" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "${rc}"

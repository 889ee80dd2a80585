#!/usr/bin/env bash
# Runs the whole suite against the local cluster, which it starts (or reuses): the control
# plane with its kwok node (hack/cluster.sh) and the real node with the images built here
# (hack/node.sh; root). pytest's exit code 5 (no tests collected) is a failure, never a pass.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}" || exit 1

hack/cluster.sh up >/dev/null || { echo "error: the local control plane did not start" >&2; exit 1; }
export KUBECONFIG="${KUBELOOP_CLUSTER_DIR:-${repo}/.cluster}/kubeconfig"
hack/node.sh up || { echo "error: the real node did not start (logs: ~/.cache/kubeloop/node/logs)" >&2; exit 1; }

rc=0
python3 -m pytest "$@" || rc=$?
if [ "${rc}" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "${rc}"

#!/usr/bin/env bash
# Runs the whole suite against the local cluster, which it starts (or reuses): the control
# plane with its kwok node (hack/cluster.sh) and the real node with the images built here
# (hack/node.sh; root). pytest's exit code 5 (no tests collected) is a failure, never a pass.
#
# With no arguments, the tests marked `long` (the API server and etcd restarted 10 times,
# ~10 minutes, mostly waiting) run at the same time as the rest, on a control plane of their
# own (its own name, directory and kwok pod range, so nothing of the two is shared); their
# output follows the main run's. With arguments, pytest runs exactly what they select.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}" || exit 1

main_dir="${KUBELOOP_CLUSTER_DIR:-${repo}/.cluster}"
long_name="${KUBELOOP_CLUSTER_NAME:-kubeloop}-long"
long_dir="${main_dir}-long"

hack/cluster.sh up >/dev/null || { echo "error: the local control plane did not start" >&2; exit 1; }
export KUBECONFIG="${main_dir}/kubeconfig"
hack/node.sh up || { echo "error: the real node did not start (logs: ~/.cache/kubeloop/node/logs)" >&2; exit 1; }

# pytest's exit code, with 5 (nothing collected) as a failure.
checked() {
  local rc=$1
  if [ "${rc}" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    return 1
  fi
  return "${rc}"
}

long_tests() {
  export KUBELOOP_CLUSTER_NAME="${long_name}" KUBELOOP_CLUSTER_DIR="${long_dir}"
  export KUBELOOP_KWOK_POD_CIDR=127.2.0.1/16 KUBECONFIG="${long_dir}/kubeconfig"
  local rc=0
  hack/cluster.sh up >/dev/null || { echo "error: the long tests' control plane did not start" >&2; return 1; }
  python3 -m pytest -m long tests/integration || rc=$?
  hack/cluster.sh down >/dev/null 2>&1 || true
  return "${rc}"
}

if [ "$#" -gt 0 ]; then
  rc=0
  python3 -m pytest "$@" || rc=$?
  checked "${rc}"
  exit $?
fi

long_log="$(mktemp)"
trap 'rm -f "${long_log}"' EXIT
long_tests >"${long_log}" 2>&1 &
long_pid=$!
rc=0
python3 -m pytest -m 'not long' || rc=$?
long_rc=0
wait "${long_pid}" || long_rc=$?
echo "=== the long tests (run beside the others on control plane ${long_name}) ==="
cat "${long_log}"
main_ok=0
checked "${rc}" || main_ok=$?
long_ok=0
checked "${long_rc}" || long_ok=$?
[ "${main_ok}" -eq 0 ] && [ "${long_ok}" -eq 0 ]

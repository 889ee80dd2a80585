#!/usr/bin/env bash
# Delete the kind cluster made by hack/kind-up.sh (and everything in it).
#   hack/kind-down.sh
set -euo pipefail

CLUSTER="${KIND_CLUSTER_NAME:-kubeloop}"

command -v kind >/dev/null 2>&1 || { echo "error: kind is not installed or not on PATH" >&2; exit 1; }

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  kind delete cluster --name "${CLUSTER}"
else
  echo "No kind cluster named ${CLUSTER}; nothing to delete."
fi

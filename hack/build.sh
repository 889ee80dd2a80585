#!/usr/bin/env bash
# Builds everything the local cluster runs, side by side: the Go binaries (control plane,
# kubelet, kube-proxy, kwok, Prometheus: hack/build-control-plane.sh) and, as root, the
# images (hack/images.sh prepare: the Debian base, pause, operator and runtime). Both are
# cached; a warm run takes seconds. Logs of the image build: ${cache}/images/build.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
start=$SECONDS
images_pid=""
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p "${cache}/images"
  "${here}/images.sh" prepare >"${cache}/images/build.log" 2>&1 &
  images_pid=$!
fi
rc=0
"${here}/build-control-plane.sh" >/dev/null || rc=$?
if [ -n "${images_pid}" ]; then
  if ! wait "${images_pid}"; then
    tail -n 40 "${cache}/images/build.log" >&2
    echo "error: the image build failed (log: ${cache}/images/build.log)" >&2
    rc=1
  fi
fi
[ "${rc}" -eq 0 ] && echo "Built the local cluster's binaries and images in $((SECONDS - start))s." >&2
exit "${rc}"

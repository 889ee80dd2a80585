#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# An S3-compatible object store for the local cluster: versitygw (Apache-2.0, built by
# hack/build-control-plane.sh) over a directory, listening on the real node's bridge
# address, which pods reach and nothing off this machine does (hack/node.sh's guard rules).
#
#   hack/s3.sh up      start it (or reuse it); creates the bucket kubeloop-example
#   hack/s3.sh down    stop it (the data stays in ${KUBELOOP_S3_DIR})
#   hack/s3.sh env     print the exports a client needs
#
# Address: ${KUBELOOP_S3_ADDRESS:-$NODE_IP:7070}; keys: ${KUBELOOP_S3_ACCESS_KEY:-kubeloop}
# and ${KUBELOOP_S3_SECRET_KEY:-kubeloop-example-key} (a local example store's, not secrets).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
# shellcheck source=versions.env
. "${here}/versions.env"
# shellcheck source=node.env
. "${here}/node.env"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
dir="${KUBELOOP_S3_DIR:-${KUBELOOP_CLUSTER_DIR:-${repo}/.cluster}/s3}"
address="${KUBELOOP_S3_ADDRESS:-${NODE_IP}:7070}"
access="${KUBELOOP_S3_ACCESS_KEY:-kubeloop}"
secret="${KUBELOOP_S3_SECRET_KEY:-kubeloop-example-key}"
binary="${cache}/bin/versitygw-${VERSITYGW_VERSION}/versitygw"

log() { printf '%s\n' "$*" >&2; }

answers() { (exec 3<>"/dev/tcp/${address%:*}/${address##*:}") 2>/dev/null; }

env_() {
  echo "export AWS_ENDPOINT_URL=http://${address}"
  echo "export AWS_ACCESS_KEY_ID=${access}"
  echo "export AWS_SECRET_ACCESS_KEY=${secret}"
  echo "export AWS_REGION=us-east-1"
}

up() {
  [ -x "${binary}" ] || "${here}/build-control-plane.sh" >/dev/null
  mkdir -p "${dir}/data/kubeloop-example" "${dir}/meta"
  if answers; then
    log "The object store at ${address} is already running."
  else
    ROOT_ACCESS_KEY_ID="${access}" ROOT_SECRET_ACCESS_KEY="${secret}" \
      setsid "${binary}" --port "${address}" --region us-east-1 --quiet \
      posix --sidecar "${dir}/meta" "${dir}/data" >>"${dir}/versitygw.log" 2>&1 </dev/null &
    echo $! >"${dir}/versitygw.pid"
    local _
    for _ in $(seq 1 100); do answers && break; sleep 0.1; done
    answers || { log "error: versitygw did not listen on ${address} (${dir}/versitygw.log)"; exit 1; }
    log "Started versitygw on ${address} (data in ${dir}/data)."
  fi
  env_ | tee "${dir}/s3.env"
}

down() {
  if [ -f "${dir}/versitygw.pid" ]; then
    kill "$(cat "${dir}/versitygw.pid")" 2>/dev/null || true
    rm -f "${dir}/versitygw.pid"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_ ;;
  *) log "usage: $0 up|down|env"; exit 2 ;;
esac

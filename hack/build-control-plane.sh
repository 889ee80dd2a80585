#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the local control plane from the published Go modules, once per version:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kubelet, kube-proxy                                               (k8s.io/kubernetes, hack/k8s)
#   etcd                                                              (go.etcd.io/etcd/server/v3, hack/etcd)
#   kwok, kwokctl                                                     (sigs.k8s.io/kwok)
#   prometheus, promtool                         (hack/build-prometheus.sh, hack/prometheus)
#   versitygw (the tests' S3 server, Apache-2.0)                     (github.com/versity/versitygw)
# Binaries land in ${KUBELOOP_CACHE:-~/.cache/kubeloop}/bin/<component>-<version>/ and are
# built only when missing. Prints the directory of each set on stdout, timings on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "${here}/versions.env"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
ldflags="-s -w"
# Every Kubernetes binary reports this version (otherwise v0.0.0-master+$Format:%H$).
k8s_ldflags="${ldflags} -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitTreeState=clean"

log() { printf '%s\n' "$*" >&2; }

build_k8s() {
  local out="${cache}/bin/kubernetes-${K8S_VERSION}"
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local missing=0 b
  for b in "${want[@]}"; do [ -x "${out}/${b}" ] || missing=1; done
  if [ "${missing}" = 1 ]; then
    log "Building Kubernetes ${K8S_VERSION} (${want[*]}) ..."
    local start=$SECONDS tmp="${out}.tmp.$$"
    mkdir -p "${tmp}"
    (cd "${here}/k8s" && go build -trimpath -ldflags "${k8s_ldflags}" -o "${tmp}/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy)
    rm -rf "${out}" && mv "${tmp}" "${out}"
    log "Built Kubernetes in $((SECONDS - start))s"
  fi
  echo "${out}"
}

build_etcd() {
  local out="${cache}/bin/etcd-${ETCD_VERSION}"
  if [ ! -x "${out}/etcd" ]; then
    log "Building etcd ${ETCD_VERSION} ..."
    local start=$SECONDS tmp="${out}.tmp.$$"
    mkdir -p "${tmp}"
    (cd "${here}/etcd" && go build -trimpath -ldflags "${ldflags}" -o "${tmp}/etcd" go.etcd.io/etcd/server/v3)
    rm -rf "${out}" && mv "${tmp}" "${out}"
    log "Built etcd in $((SECONDS - start))s"
  fi
  echo "${out}"
}

build_kwok() {
  local out="${cache}/bin/kwok-${KWOK_VERSION}"
  if [ ! -x "${out}/kwok" ] || [ ! -x "${out}/kwokctl" ]; then
    log "Building kwok and kwokctl ${KWOK_VERSION} ..."
    local start=$SECONDS tmp="${out}.tmp.$$"
    mkdir -p "${tmp}"
    GOBIN="${tmp}" GOFLAGS='' go install -trimpath -ldflags "${ldflags}" \
      "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}"
    rm -rf "${out}" && mv "${tmp}" "${out}"
    log "Built kwok in $((SECONDS - start))s"
  fi
  echo "${out}"
}

build_versitygw() {
  local out="${cache}/bin/versitygw-${VERSITYGW_VERSION}"
  if [ ! -x "${out}/versitygw" ]; then
    log "Building versitygw ${VERSITYGW_VERSION} ..."
    local start=$SECONDS tmp="${out}.tmp.$$"
    mkdir -p "${tmp}"
    GOBIN="${tmp}" GOFLAGS='' go install -trimpath -ldflags "${ldflags}" \
      "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}"
    rm -rf "${out}" && mv "${tmp}" "${out}"
    log "Built versitygw in $((SECONDS - start))s"
  fi
  echo "${out}"
}

command -v go >/dev/null || { log "error: the Go toolchain is required (https://go.dev/doc/install)"; exit 1; }
# The three builds share no module; run them side by side (a cold build is mostly downloads
# and compiles of disjoint packages), then print their directories in a fixed order.
outs="$(mktemp -d)"
trap 'rm -rf "${outs}"' EXIT
build_etcd >"${outs}/etcd" &
etcd_pid=$!
build_kwok >"${outs}/kwok" &
kwok_pid=$!
build_versitygw >"${outs}/versitygw" &
versitygw_pid=$!
build_k8s >"${outs}/k8s" &
k8s_pid=$!
# Prometheus with Kubernetes service discovery (the real node's monitoring image) shares
# these two cores best here, beside the control plane, rather than after it.
"${here}/build-prometheus.sh" >"${outs}/prometheus" &
prometheus_pid=$!
failed=0
wait "${etcd_pid}" || failed=1
wait "${kwok_pid}" || failed=1
wait "${versitygw_pid}" || failed=1
wait "${k8s_pid}" || failed=1
wait "${prometheus_pid}" || failed=1
[ "${failed}" = 0 ] || { log "error: a control-plane build failed (see above)"; exit 1; }
cat "${outs}/etcd" "${outs}/kwok" "${outs}/k8s" "${outs}/prometheus" "${outs}/versitygw"

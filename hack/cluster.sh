#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Kubeloop's local control plane: real kube-apiserver (RBAC + PodSecurity admission), etcd,
# kube-controller-manager and kube-scheduler, with kwok simulating one tainted node and its
# pods. hack/node.sh adds the real node (kubelet, containerd, kube-proxy) that runs every
# other pod for real.
#
#   hack/cluster.sh up      build (once) and start it, or reuse a running one
#   hack/cluster.sh down    stop it and delete its data
#   hack/cluster.sh status  exit 0 when it answers
#   hack/cluster.sh env     print the exports that point kubectl at it
#
# The kubeconfig is written to ${KUBELOOP_CLUSTER_DIR:-<repo>/.cluster}/kubeconfig.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
# shellcheck source=versions.env
. "${here}/versions.env"
# shellcheck source=node.env
. "${here}/node.env"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
cluster_dir="${KUBELOOP_CLUSTER_DIR:-${repo}/.cluster}"
kubeconfig="${cluster_dir}/kubeconfig"
name="${KUBELOOP_CLUSTER_NAME:-kubeloop}"
export KWOK_WORKDIR="${cache}/kwok"

log() { printf '%s\n' "$*" >&2; }

bins() {
  local dirs
  dirs="$("${here}/build-control-plane.sh")"
  etcd_dir="$(sed -n 1p <<<"${dirs}")"
  kwok_dir="$(sed -n 2p <<<"${dirs}")"
  k8s_dir="$(sed -n 3p <<<"${dirs}")"
  kubectl="${k8s_dir}/kubectl"
}

answers() {
  [ -f "${kubeconfig}" ] && "${kubectl}" --kubeconfig "${kubeconfig}" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

up() {
  bins
  if answers; then
    log "Control plane ${name} is already running."
  else
    local start=$SECONDS
    "${kwok_dir}/kwokctl" delete cluster --name "${name}" >/dev/null 2>&1 || true
    mkdir -p "${cluster_dir}"
    apiserver_config > "${cluster_dir}/kwokctl.yaml"
    "${kwok_dir}/kwokctl" create cluster \
      --name "${name}" \
      --runtime binary \
      --config "${here}/cluster/kwok.yaml" \
      --config "${cluster_dir}/kwokctl.yaml" \
      --kube-authorization \
      --kube-admission \
      --etcd-binary "${etcd_dir}/etcd" \
      --kube-apiserver-binary "${k8s_dir}/kube-apiserver" \
      --kube-controller-manager-binary "${k8s_dir}/kube-controller-manager" \
      --kube-scheduler-binary "${k8s_dir}/kube-scheduler" \
      --kwok-controller-binary "${kwok_dir}/kwok" \
      --kubeconfig "${kubeconfig}" \
      --wait 120s >&2
    # kwokctl also merges the context into ~/.kube/config; the fixed kubeconfig is the contract.
    local _
    for _ in $(seq 1 60); do
      answers && break
      sleep 1
    done
    answers || { log "error: the API server did not become ready; logs: ${KWOK_WORKDIR}/clusters/${name}/logs"; exit 1; }
    "${kubectl}" --kubeconfig "${kubeconfig}" apply -f "${here}/cluster/node.yaml" >&2
    log "Started control plane ${name} in $((SECONDS - start))s."
  fi
  "${kubectl}" --kubeconfig "${kubeconfig}" wait --for=condition=Ready node/kwok-node-0 --timeout=60s >&2
  # The default ServiceAccount appears once the controller-manager runs.
  local _
  for _ in $(seq 1 60); do
    "${kubectl}" --kubeconfig "${kubeconfig}" -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  env_hint
}

# The API server's flags for the real node: a Service range of its own (a /16), the bridge
# address as the advertised address (pods reach it at the `kubernetes` ClusterIP), its serving
# certificate valid for both, client certificates for kubelet logs/exec/port-forward, nodes
# reached by InternalIP (no DNS here), and the admission plugins that keep the kwok tier's
# pods on the kwok node; and kwok restricted to the fake node.
apiserver_config() {
  local pki="${KWOK_WORKDIR}/clusters/${name}/pki"
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  kubeApiserverCertSANs:
    - ${KUBERNETES_SERVICE_IP}
    - ${NODE_IP}
componentsPatches:
  - name: kube-apiserver
    extraArgs:
      - key: service-cluster-ip-range
        value: ${SERVICE_CIDR}
      - key: advertise-address
        value: ${NODE_IP}
      - key: kubelet-client-certificate
        value: ${pki}/admin.crt
      - key: kubelet-client-key
        value: ${pki}/admin.key
      - key: kubelet-preferred-address-types
        value: InternalIP
      - key: enable-admission-plugins
        value: PodNodeSelector,PodTolerationRestriction
  - name: kube-controller-manager
    extraArgs:
      - key: service-cluster-ip-range
        value: ${SERVICE_CIDR}
  # kwokctl's binary runtime always passes --manage-all-nodes=true, which would take over the
  # real node: kwok manages the annotated fake node only.
  - name: kwok-controller
    extraArgs:
      - key: manage-all-nodes
        value: "false"
        override: true
      - key: manage-nodes-with-annotation-selector
        value: kwok.x-k8s.io/node=fake
EOF
}

down() {
  bins
  "${kwok_dir}/kwokctl" delete cluster --name "${name}" >&2 || true
  rm -f "${kubeconfig}"
  log "Stopped control plane ${name}."
}

env_hint() {
  log ""
  log "Point kubectl at it with:"
  # shellcheck disable=SC2016 # $PATH is for the reader's shell to expand
  printf 'export KUBECONFIG=%s\nexport PATH=%s:$PATH\n' "${kubeconfig}" "${k8s_dir}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) bins; answers ;;
  env) bins; env_hint ;;
  *) log "usage: $0 up|down|status|env"; exit 2 ;;
esac

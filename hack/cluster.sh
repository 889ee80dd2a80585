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
#   hack/cluster.sh stop-component NAME [SIGNAL]   kill one component (etcd, kube-apiserver, ...;
#                                                  SIGNAL: TERM, the default, or KILL)
#   hack/cluster.sh start-component NAME           start it again with the same command line
#
# The kubeconfig is written to ${KUBELOOP_CLUSTER_DIR:-<repo>/.cluster}/kubeconfig.
# KUBELOOP_KWOK_POD_CIDR (default 127.1.0.1/16, a loopback range) is where kwok's pods get
# their IPs: two clusters on one machine need two ranges, or their process-tier pods (the
# test kubelet's servers on the pod IPs) collide.
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
pod_ips="${KUBELOOP_KWOK_POD_CIDR:-127.1.0.1/16}"
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
    sed "s|^  cidr: .*|  cidr: ${pod_ips}|" "${here}/cluster/kwok.yaml" > "${cluster_dir}/kwok.yaml"
    "${kwok_dir}/kwokctl" create cluster \
      --name "${name}" \
      --runtime binary \
      --config "${cluster_dir}/kwok.yaml" \
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
  # One replica of each: a leader election would make them exit whenever the API server is
  # away for longer than the renew deadline (10 s), and nothing here restarts them.
  - name: kube-controller-manager
    extraArgs:
      - key: service-cluster-ip-range
        value: ${SERVICE_CIDR}
      - key: leader-elect
        value: "false"
  - name: kube-scheduler
    extraArgs:
      - key: leader-elect
        value: "false"
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

# Restarting one component for real (tests/integration/test_control_plane_restarts.py):
# kwokctl's binary runtime forks each component with setsid from its cluster directory, its
# output appended to logs/<binary>.log and its pid in pids/<binary>.pid, and has no command to
# restart one. stop-component keeps the process's own command line and environment
# (/proc/PID/cmdline, environ) beside the pid file and kills it; start-component starts the
# same command line in the same way and writes the new pid, so `hack/cluster.sh down`
# (kwokctl delete cluster) still stops it.
component_dir() {
  printf '%s/clusters/%s' "${KWOK_WORKDIR}" "${name}"
}

stop_component() {
  local component="$1" signal="${2:-TERM}" dir pid _
  dir="$(component_dir)"
  [[ "${component}" =~ ^[a-z-]+$ ]] || { log "error: no component ${component}"; exit 2; }
  [ -f "${dir}/pids/${component}.pid" ] || { log "error: ${component} of ${name} is not running"; exit 1; }
  pid="$(cat "${dir}/pids/${component}.pid")"
  [ -r "/proc/${pid}/cmdline" ] || { log "error: ${component} (pid ${pid}) is gone"; exit 1; }
  cp "/proc/${pid}/cmdline" "${dir}/pids/${component}.cmdline"
  cp "/proc/${pid}/environ" "${dir}/pids/${component}.environ"
  kill "-${signal}" "${pid}"
  # Gone, or a zombie that whoever adopted it has not reaped yet (it holds no port then).
  # kube-apiserver's graceful SIGTERM shutdown waits out its watches (more than 60 s here).
  for _ in $(seq 1 1800); do
    [ -d "/proc/${pid}" ] || break
    [ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" = "Z" ] && break
    sleep 0.05
  done
  if [ -d "/proc/${pid}" ] && [ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]; then
    log "error: ${component} (pid ${pid}) did not stop within 90s"
    exit 1
  fi
  rm -f "${dir}/pids/${component}.pid"
  log "Stopped ${component} of ${name} (pid ${pid}, SIG${signal})."
}

start_component() {
  local component="$1" dir pid
  dir="$(component_dir)"
  [[ "${component}" =~ ^[a-z-]+$ ]] || { log "error: no component ${component}"; exit 2; }
  if [ -f "${dir}/pids/${component}.pid" ] && kill -0 "$(cat "${dir}/pids/${component}.pid")" 2>/dev/null; then
    log "${component} of ${name} is already running."
    return 0
  fi
  [ -f "${dir}/pids/${component}.cmdline" ] || { log "error: ${component} was not stopped by stop-component"; exit 1; }
  local -a argv envv
  mapfile -d '' argv <"${dir}/pids/${component}.cmdline"
  mapfile -d '' envv <"${dir}/pids/${component}.environ"
  # setsid and env exec in place: $! is the component's own pid, as kwokctl records it.
  (cd "${dir}" && exec setsid env -i "${envv[@]}" "${argv[@]}" >>"${dir}/logs/${component}.log" 2>&1 </dev/null) &
  pid=$!
  printf '%s' "${pid}" >"${dir}/pids/${component}.pid"
  log "Started ${component} of ${name} (pid ${pid})."
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
  stop-component) [ $# -ge 2 ] || { log "usage: $0 stop-component NAME [TERM|KILL]"; exit 2; }; stop_component "$2" "${3:-TERM}" ;;
  start-component) [ $# -eq 2 ] || { log "usage: $0 start-component NAME"; exit 2; }; start_component "$2" ;;
  *) log "usage: $0 up|down|status|env|stop-component NAME [SIGNAL]|start-component NAME"; exit 2 ;;
esac

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The real node of Kubeloop's local cluster: a kubelet and kube-proxy built from the same
# k8s.io/kubernetes module as the control plane (hack/build-control-plane.sh), Debian's
# containerd and runc, a CNI bridge on a private /24 (hack/node.env), kube-proxy in iptables
# mode, and the images built here from our Dockerfiles (hack/images.sh) imported into
# containerd. Every pod that is not in a kwok-tier namespace runs here, in a real container.
#
#   hack/node.sh up      start it (or reuse a running one) and import the images; needs root
#   hack/node.sh down    stop it; remove every pod, mount, cgroup, bridge and rule it made
#   hack/node.sh status  exit 0 when the node is Ready
#   hack/node.sh restart-kubelet [SECONDS]
#                        stop the kubelet (SIGTERM), wait SECONDS (default 0), start it again
#                        with the same flags; pods and containers keep running meanwhile
#   hack/node.sh volume NAMESPACE CLAIM
#                        a hostPath PersistentVolume on this node, pre-bound to that claim
#                        (storage class kubeloop-local; the local overlay's artifact PVC)
#
# Guard rules keep the pod and Service ranges on this machine: a packet from a pod to any
# address outside the pod range, to a pod from outside it, or to a ClusterIP that kube-proxy
# did not translate, is rejected. hack/cluster.sh must be up first (same KUBELOOP_* settings).
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
node_dir="${KUBELOOP_NODE_DIR:-${cache}/node}"
pki="${cache}/kwok/clusters/${name}/pki"
run="${node_dir}/run"
logs="${node_dir}/logs"
sock="${run}/containerd.sock"
guard=KUBELOOP-GUARD
guard_out=KUBELOOP-GUARD-OUT

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

bins() {
  local dirs
  dirs="$("${here}/build-control-plane.sh")"
  k8s_dir="$(sed -n 3p <<<"${dirs}")"
  kubectl=("${k8s_dir}/kubectl" --kubeconfig "${kubeconfig}")
}

need() {
  [ "$(id -u)" -eq 0 ] || die "the real node needs root (network namespaces, mounts, cgroups, iptables)"
  local c
  for c in containerd containerd-shim-runc-v2 runc ctr iptables ip; do
    command -v "${c}" >/dev/null 2>&1 || die "${c} is missing: run hack/install-deps.sh"
  done
  if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
    die "the CNI plugins are missing: run hack/install-deps.sh (containernetworking-plugins)"
  fi
  [ -f "${kubeconfig}" ] || die "no control plane: run hack/cluster.sh up first"
}

alive() { # alive NAME: the daemon NAME started by this script is running
  local pid
  pid="$(cat "${run}/$1.pid" 2>/dev/null)" || return 1
  [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null
}

start_daemon() { # start_daemon NAME COMMAND...: in its own session, log and pid under node_dir
  local daemon="$1"
  shift
  setsid "$@" >"${logs}/${daemon}.log" 2>&1 </dev/null &
  echo $! >"${run}/${daemon}.pid"
}

stop_daemon() { # stop_daemon NAME: SIGTERM, then SIGKILL after 10 s
  local pid _
  pid="$(cat "${run}/$1.pid" 2>/dev/null)" || return 0
  if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  rm -f "${run}/$1.pid"
}

ready() {
  [ "$("${kubectl[@]}" get node "${NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# ---------------------------------------------------------------------------------- network

sysctl_set() { # sysctl_set KEY VALUE: remember the old value once, for down
  local path="/proc/sys/${1//.//}"
  [ -f "${node_dir}/sysctl.saved" ] && grep -q "^$1 " "${node_dir}/sysctl.saved" \
    || echo "$1 $(cat "${path}")" >>"${node_dir}/sysctl.saved"
  echo "$2" >"${path}"
}

network_up() {
  # Pod -> ClusterIP -> pod crosses the host (routing + conntrack on the bridge).
  sysctl_set net.ipv4.ip_forward 1
  sysctl_set net.bridge.bridge-nf-call-iptables 1
  if ! ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then
    ip link add "${NODE_BRIDGE}" type bridge
  fi
  ip addr replace "${NODE_IP}/${POD_CIDR#*/}" dev "${NODE_BRIDGE}"
  ip link set "${NODE_BRIDGE}" up
  guard_up
}

guard_up() {
  iptables -w -N "${guard}" 2>/dev/null || iptables -w -F "${guard}"
  iptables -w -A "${guard}" -s "${POD_CIDR}" -d "${POD_CIDR}" -j RETURN
  iptables -w -A "${guard}" -s "${POD_CIDR}" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -A "${guard}" -d "${POD_CIDR}" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -A "${guard}" -d "${SERVICE_CIDR}" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -C FORWARD -j "${guard}" 2>/dev/null || iptables -w -I FORWARD 1 -j "${guard}"
  # Locally made packets: filter/OUTPUT sees them after kube-proxy's DNAT, so a destination
  # still in the Service range was not translated and would follow the default route.
  iptables -w -N "${guard_out}" 2>/dev/null || iptables -w -F "${guard_out}"
  iptables -w -A "${guard_out}" -d "${SERVICE_CIDR}" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -C OUTPUT -j "${guard_out}" 2>/dev/null || iptables -w -I OUTPUT 1 -j "${guard_out}"
}

guard_down() {
  local chain hook
  for chain in "${guard}" "${guard_out}"; do
    hook=FORWARD
    [ "${chain}" = "${guard_out}" ] && hook=OUTPUT
    while iptables -w -D "${hook}" -j "${chain}" 2>/dev/null; do :; done
    iptables -w -F "${chain}" 2>/dev/null || true
    iptables -w -X "${chain}" 2>/dev/null || true
  done
}

# The chains kubelet makes itself (kube-proxy --cleanup leaves them), in IPv4 and IPv6.
kubelet_chains_down() {
  local cmd table chain hook
  for cmd in iptables ip6tables; do
    command -v "${cmd}" >/dev/null 2>&1 || continue
    for hook in INPUT OUTPUT; do
      while "${cmd}" -w -D "${hook}" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "${cmd}" -w -t "${table}" -F "${chain}" 2>/dev/null || true
        "${cmd}" -w -t "${table}" -X "${chain}" 2>/dev/null || true
      done
    done
  done
}

network_down() {
  guard_down
  if ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then ip link delete "${NODE_BRIDGE}"; fi
  if [ -f "${node_dir}/sysctl.saved" ]; then
    local key value
    while read -r key value; do
      echo "${value}" >"/proc/sys/${key//.//}" || true
    done <"${node_dir}/sysctl.saved"
    rm -f "${node_dir}/sysctl.saved"
  fi
}

# ------------------------------------------------------------------------------ containerd

write_configs() {
  mkdir -p "${node_dir}/cni/net.d" "${node_dir}/cni/ipam" "${node_dir}/kubelet" "${node_dir}/pod-logs"
  cat >"${node_dir}/containerd.toml" <<EOF
# Written by hack/node.sh.
version = 2
root = "${node_dir}/containerd/root"
state = "${node_dir}/containerd/state"
[grpc]
  address = "${sock}"
[ttrpc]
  address = "${sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/kubeloop/pause:3.10"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${node_dir}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${node_dir}/registries"
EOF
  # No pull leaves this machine: every image is built here (hack/images.sh) and imported, and
  # each registry a manifest names points at a closed local port (a missing image fails fast).
  local registry
  for registry in _default docker.io ghcr.io quay.io registry.k8s.io gcr.io; do
    mkdir -p "${node_dir}/registries/${registry}"
    printf '# Written by hack/node.sh: pulls fail here, on this machine.\nserver = "http://127.0.0.1:9"\n' \
      >"${node_dir}/registries/${registry}/hosts.toml"
  done
  cat >"${node_dir}/cni/net.d/10-kubeloop.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kubeloop",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${node_dir}/cni/ipam",
        "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${NODE_IP}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # Pods ask the bridge for names and get a refusal: no DNS leaves this machine.
  printf 'nameserver %s\noptions ndots:1 timeout:1 attempts:1\n' "${NODE_IP}" >"${node_dir}/resolv.conf"
  cat >"${node_dir}/kubelet.yaml" <<EOF
# Written by hack/node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
containerRuntimeEndpoint: unix://${sock}
cgroupDriver: cgroupfs
# This host runs cgroup v1, which kubelet 1.34 still accepts when asked.
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${pki}/ca.crt
authorization:
  mode: Webhook
podLogsDir: ${node_dir}/pod-logs
resolvConf: ${node_dir}/resolv.conf
clusterDomain: cluster.local
maxPods: 110
serializeImagePulls: false
# Our images exist only in this containerd: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 200Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
EOF
  cat >"${node_dir}/kube-proxy.yaml" <<EOF
# Written by hack/node.sh.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: ${NODE_NAME}
clientConnection:
  kubeconfig: ${kubeconfig}
clusterCIDR: ${POD_CIDR}
# NodePorts only on the bridge, never on an outside interface.
nodePortAddresses: ["${NODE_IP}/32"]
metricsBindAddress: 127.0.0.1:${KUBE_PROXY_METRICS_PORT}
healthzBindAddress: 127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}
iptables:
  localhostNodePorts: false
# No conntrack sysctl writes: keep the host's values.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

containerd_up() {
  if ! alive containerd; then
    start_daemon containerd containerd --config "${node_dir}/containerd.toml"
  fi
  local _
  for _ in $(seq 1 100); do
    ctr --address "${sock}" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "containerd did not start; see ${logs}/containerd.log"
}

# ----------------------------------------------------------------------------------- up/down

start_kubelet() {
  start_daemon kubelet "${k8s_dir}/kubelet" \
    --config "${node_dir}/kubelet.yaml" \
    --kubeconfig "${kubeconfig}" \
    --root-dir "${node_dir}/kubelet" \
    --cert-dir "${node_dir}/kubelet/pki" \
    --hostname-override "${NODE_NAME}" \
    --node-ip "${NODE_IP}" \
    --node-labels "type=real,kubeloop.io/node=real" \
    --v 1
}

# The kubelet alone, as an upgrade or a crash of it does: containers keep running, and the
# new kubelet adopts them (tests/integration/test_real_faults.py). The old log is kept.
restart_kubelet() {
  local pause="${1:-0}" _
  [ "$(id -u)" -eq 0 ] || die "the real node needs root"
  bins
  alive kubelet || die "the kubelet is not running (hack/node.sh up)"
  stop_daemon kubelet
  cat "${logs}/kubelet.log" >>"${logs}/kubelet.previous.log"
  sleep "${pause}"
  start_kubelet
  for _ in $(seq 1 120); do
    ready && break
    alive kubelet || die "kubelet exited; see ${logs}/kubelet.log"
    sleep 0.5
  done
  ready || die "node ${NODE_NAME} did not become Ready again; see ${logs}/kubelet.log"
  log "Restarted the kubelet of ${NODE_NAME} (stopped for ${pause}s)."
}

up() {
  need
  bins
  mkdir -p "${run}" "${logs}"
  local start=$SECONDS
  if alive kubelet && alive kube-proxy && alive containerd && ready; then
    log "Node ${NODE_NAME} is already running."
  else
    teardown quiet
    mkdir -p "${run}" "${logs}"
    network_up
    write_configs
    containerd_up
  fi
  "${here}/images.sh" all "${sock}" >&2
  alive kubelet || start_kubelet
  if ! alive kube-proxy; then
    start_daemon kube-proxy "${k8s_dir}/kube-proxy" --config "${node_dir}/kube-proxy.yaml" --v 1
  fi
  local _
  for _ in $(seq 1 120); do
    ready && break
    alive kubelet || die "kubelet exited; see ${logs}/kubelet.log"
    sleep 0.5
  done
  ready || die "node ${NODE_NAME} did not become Ready; see ${logs}/kubelet.log"
  log "Node ${NODE_NAME} Ready ($((SECONDS - start))s): pods on ${POD_CIDR}, Services on ${SERVICE_CIDR}, logs in ${logs}."
}

# Kills every container the node started, unmounts what kubelet and containerd mounted,
# removes their cgroups, the bridge, kube-proxy's and our iptables rules, and restores sysctls.
teardown() {
  local quiet="${1:-}"
  stop_daemon kube-proxy
  stop_daemon kubelet
  local cg procs pid
  for cg in /sys/fs/cgroup/*/kubepods; do
    [ -d "${cg}" ] || continue
    while IFS= read -r procs; do
      while read -r pid; do kill -KILL "${pid}" 2>/dev/null || true; done <"${procs}"
    done < <(find "${cg}" -name cgroup.procs)
  done
  pkill -KILL -f "containerd-shim-runc-v2 .*-address ${sock}" 2>/dev/null || true
  stop_daemon containerd
  local mnt
  while IFS= read -r mnt; do
    umount -l "${mnt}" 2>/dev/null || true
  done < <(awk -v dir="${node_dir}" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  # The pods' network namespaces (containerd names them cni-<uuid>).
  local ns
  for ns in /run/netns/cni-*; do
    [ -e "${ns}" ] || continue
    umount "${ns}" 2>/dev/null || true
    rm -f "${ns}"
  done
  for cg in /sys/fs/cgroup/*/kubepods; do
    [ -d "${cg}" ] && find "${cg}" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ -n "${k8s_dir:-}" ] && [ -x "${k8s_dir}/kube-proxy" ]; then
    "${k8s_dir}/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  kubelet_chains_down
  network_down
  rm -rf "${node_dir}/cni/ipam" "${node_dir}/kubelet/pods" "${node_dir}/containerd/state" "${run}"
  [ -n "${quiet}" ] || log "Stopped node ${NODE_NAME}; removed its pods, mounts, cgroups, bridge and rules."
}

down() {
  [ "$(id -u)" -eq 0 ] || die "the real node needs root"
  bins
  if [ -f "${kubeconfig}" ]; then
    "${kubectl[@]}" delete node "${NODE_NAME}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  teardown
}

# A directory on this node as a PersistentVolume pre-bound to NAMESPACE/CLAIM: the local
# cluster's stand-in for a volume provisioner. Owned by the uid Kubeloop's pods run as
# (hostPath volumes ignore fsGroup).
volume() {
  local ns="$1" claim="$2" uid=65532
  bins
  local pv="kubeloop-local-${ns}-${claim}" dir="${node_dir}/volumes/${ns}/${claim}"
  mkdir -p "${dir}"
  chown "${uid}:${uid}" "${dir}"
  chmod 0770 "${dir}"
  # A volume whose claim was deleted is Released and binds no new claim: make it anew (the
  # directory, and what the old claim wrote there, stays).
  if [ "$("${kubectl[@]}" get pv "${pv}" -o jsonpath='{.status.phase}' 2>/dev/null)" = Released ]; then
    "${kubectl[@]}" delete pv "${pv}" --wait=true >&2
  fi
  "${kubectl[@]}" apply --server-side --field-manager kubeloop-node -f - >&2 <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: ${pv}
  labels:
    app.kubernetes.io/part-of: kubeloop
    kubeloop.io/node-volume: "true"
spec:
  capacity:
    storage: 2Gi
  accessModes: ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"]
  storageClassName: kubeloop-local
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: ${dir}
    type: Directory
  claimRef:
    namespace: ${ns}
    name: ${claim}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/hostname
              operator: In
              values: ["${NODE_NAME}"]
EOF
  echo "${pv}"
}

case "${1:-}" in
  up) up ;;
  volume) [ $# -eq 3 ] || { log "usage: $0 volume NAMESPACE CLAIM"; exit 2; }; volume "$2" "$3" ;;
  down) down ;;
  status) bins; alive kubelet && ready ;;
  restart-kubelet) [ $# -le 2 ] || { log "usage: $0 restart-kubelet [SECONDS]"; exit 2; }; restart_kubelet "${2:-0}" ;;
  *) log "usage: $0 up|down|status|volume|restart-kubelet"; exit 2 ;;
esac

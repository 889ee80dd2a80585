#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The main job on a machine without Docker (`make up`): build what is missing, start the local
# cluster with its real node, install Kubeloop and its Prometheus (manifests/overlays/local),
# train and serve iris as examples/iris/README.md does, and print a prediction with the
# command that got it. Safe to run again: everything is reused or re-applied.
#
#   hack/up.sh          (needs root: the real node)
#   hack/down.sh        tears it all down
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
# shellcheck source=node.env
. "${here}/node.env"
TIMEOUT="${TIMEOUT:-300s}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

cd "${repo}"
start=$SECONDS

say "Installing what is missing (Debian and Python packages)"
hack/install-deps.sh

say "Building the local cluster's binaries and images (cached; the first run takes a while)"
hack/build.sh

say "Starting the local control plane"
exports="$(hack/cluster.sh up)"
KUBECONFIG="$(sed -n 's/^export KUBECONFIG=//p' <<<"${exports}")"
k8s_bin="$(sed -n 's/^export PATH=\([^:]*\):.*/\1/p' <<<"${exports}")"
export KUBECONFIG
kubectl=("${k8s_bin}/kubectl")

say "Starting the real node (kubelet, containerd, kube-proxy) and importing the images built here"
hack/node.sh up

say "Installing Kubeloop and Prometheus (manifests/overlays/local)"
"${kubectl[@]}" apply --server-side -k crds >/dev/null
"${kubectl[@]}" wait --for condition=Established --timeout "${TIMEOUT}" \
  crd/trainingjobs.kubeloop.io crd/modelversions.kubeloop.io crd/inferenceservices.kubeloop.io >/dev/null
# A claim another install made (the kind overlay's class) cannot change class: replace it.
class="$("${kubectl[@]}" -n default get pvc kubeloop-artifacts -o jsonpath='{.spec.storageClassName}' 2>/dev/null || true)"
if [ -n "${class}" ] && [ "${class}" != kubeloop-local ]; then
  "${kubectl[@]}" -n default delete pvc kubeloop-artifacts --wait=true
fi
hack/node.sh volume default kubeloop-artifacts >/dev/null
# The object store's data (manifests/components/objectstore, in the local overlay).
hack/node.sh volume kubeloop-objectstore objectstore-data >/dev/null
"${kubectl[@]}" apply --server-side --force-conflicts -k manifests/overlays/local >/dev/null
"${kubectl[@]}" -n kubeloop-system rollout status deployment/kubeloop-operator --timeout "${TIMEOUT}"
"${kubectl[@]}" -n kubeloop-monitoring rollout status deployment/prometheus --timeout "${TIMEOUT}"
"${kubectl[@]}" -n kubeloop-objectstore rollout status deployment/objectstore --timeout "${TIMEOUT}"

say "Training iris (examples/iris/trainingjob.yaml) in a real pod"
"${kubectl[@]}" apply -f examples/iris/trainingjob.yaml
"${kubectl[@]}" wait trainingjob/iris --for condition=Succeeded --timeout "${TIMEOUT}"
"${kubectl[@]}" get modelversions
"${kubectl[@]}" patch modelversion iris-v1 --type merge -p '{"spec":{"aliases":["production"]}}'

say "Serving iris@production (examples/iris/inferenceservice.yaml)"
"${kubectl[@]}" apply -f examples/iris/inferenceservice.yaml
"${kubectl[@]}" wait inferenceservice/iris --for condition=Ready --timeout "${TIMEOUT}"
"${kubectl[@]}" rollout status deployment/iris-predictor --timeout "${TIMEOUT}" >/dev/null

ip="$("${kubectl[@]}" get service iris-predictor -o jsonpath='{.spec.clusterIP}')"
port="$("${kubectl[@]}" get service iris-predictor -o jsonpath='{.spec.ports[0].port}')"
body='{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
say "A prediction from the real predictor pod, through the Service's ClusterIP"
prediction=""
for _ in $(seq 1 30); do
  if prediction="$(curl -sf "http://${ip}:${port}/v1/models/iris:predict" \
    -H 'content-type: application/json' -d "${body}")"; then
    break
  fi
  sleep 1
done
[ -n "${prediction}" ] || { echo "error: no answer from http://${ip}:${port}" >&2; exit 1; }

cat <<MSG

${prediction}

Kubeloop is running on the local cluster, iris is served by a real pod ($((SECONDS - start))s).

  export KUBECONFIG=${KUBECONFIG}
  export PATH=${k8s_bin}:\$PATH

  # the prediction above, again (the predictor's ClusterIP is reachable from this machine):
  curl -s http://${ip}:${port}/v1/models/iris:predict \\
    -H 'content-type: application/json' -d '${body}'

  # or as examples/iris/README.md does it:
  kubectl port-forward svc/iris-predictor 8080:80 &
  curl -s localhost:8080/v1/models/iris:predict -H 'content-type: application/json' -d '${body}'

  Prometheus  http://${NODE_IP}:30090/api/v1/query?query=kubeloop_serving_predictions_total
              (in its pod, scraping the operator and the predictors by Kubernetes service
              discovery; its web UI is not built here, see docs/images.md; the kind
              quickstart adds Grafana and the dashboards)

Tear it all down with: make down
MSG

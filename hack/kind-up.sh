#!/usr/bin/env bash
# Kubeloop quickstart on kind: create the cluster, build and load the images, install the
# operator with Prometheus and Grafana, and wait until everything is ready.
#
#   hack/kind-up.sh
#
# Needs Docker (running), kind and kubectl on PATH. Safe to run again: an existing cluster
# is reused, images are rebuilt and reloaded, manifests are re-applied.
# Environment: KIND_CLUSTER_NAME (default kubeloop), KIND_NODE_IMAGE (kind's default),
# DOCKER (default docker), TIMEOUT (default 300s), OBJECTSTORE (1: add the development
# object store, manifests/overlays/kind-objectstore: versitygw built from
# hack/versitygw/Dockerfile, on localhost:7070, dev-only keys).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-kubeloop}"
DOCKER="${DOCKER:-docker}"
TIMEOUT="${TIMEOUT:-300s}"
OBJECTSTORE="${OBJECTSTORE:-}"
OPERATOR_IMAGE="kubeloop/operator:dev"
RUNTIME_IMAGE="kubeloop/runtime:dev"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "${ROOT}/hack/versions.env"
VERSITYGW_IMAGE="kubeloop/versitygw:${VERSITYGW_VERSION}"
OVERLAY=manifests/overlays/kind
[[ -z "${OBJECTSTORE}" || "${OBJECTSTORE}" == 0 ]] || OVERLAY=manifests/overlays/kind-objectstore
CONTEXT="kind-${CLUSTER}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed or not on PATH. $2"
}

need "${DOCKER}" "Install Docker: https://docs.docker.com/get-docker/"
need kind "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
"${DOCKER}" info >/dev/null 2>&1 || die "cannot talk to the Docker daemon: is it running, and may this user use it?"

cd "${ROOT}"

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  say "Reusing kind cluster ${CLUSTER}"
else
  say "Creating kind cluster ${CLUSTER}"
  create_args=(create cluster --name "${CLUSTER}" --config kind-config.yaml --wait 120s)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    create_args+=(--image "${KIND_NODE_IMAGE}")
  fi
  kind "${create_args[@]}"
fi
kubectl config use-context "${CONTEXT}" >/dev/null
KUBECTL=(kubectl --context "${CONTEXT}")

say "Building ${OPERATOR_IMAGE} and ${RUNTIME_IMAGE}"
"${DOCKER}" build -f operator/Dockerfile -t "${OPERATOR_IMAGE}" .
"${DOCKER}" build -f serving_image/Dockerfile -t "${RUNTIME_IMAGE}" .

IMAGES=("${OPERATOR_IMAGE}" "${RUNTIME_IMAGE}")
if [[ "${OVERLAY}" == */kind-objectstore ]]; then
  say "Building ${VERSITYGW_IMAGE} (the object store)"
  "${DOCKER}" build -f hack/versitygw/Dockerfile --build-arg "VERSITYGW_VERSION=${VERSITYGW_VERSION}" \
    -t "${VERSITYGW_IMAGE}" hack/versitygw
  IMAGES+=("${VERSITYGW_IMAGE}")
fi

say "Loading the images into the kind node"
kind load docker-image --name "${CLUSTER}" "${IMAGES[@]}"

say "Installing the CRDs"
"${KUBECTL[@]}" apply --server-side -k crds
"${KUBECTL[@]}" wait --for condition=Established --timeout "${TIMEOUT}" \
  crd/trainingjobs.kubeloop.io crd/modelversions.kubeloop.io crd/inferenceservices.kubeloop.io

say "Installing the operator, Prometheus and Grafana (${OVERLAY})"
"${KUBECTL[@]}" apply --server-side --force-conflicts -k "${OVERLAY}"

# The operator's image is rebuilt under the same tag: restart it so it runs the new one.
"${KUBECTL[@]}" -n kubeloop-system rollout restart deployment/kubeloop-operator

say "Waiting for the rollouts (timeout ${TIMEOUT})"
"${KUBECTL[@]}" -n kubeloop-system rollout status deployment/kubeloop-operator --timeout "${TIMEOUT}"
"${KUBECTL[@]}" -n kubeloop-monitoring rollout status deployment/prometheus --timeout "${TIMEOUT}"
"${KUBECTL[@]}" -n kubeloop-monitoring rollout status deployment/grafana --timeout "${TIMEOUT}"
if [[ "${OVERLAY}" == */kind-objectstore ]]; then
  "${KUBECTL[@]}" -n kubeloop-objectstore rollout status deployment/objectstore --timeout "${TIMEOUT}"
  cat <<MSG

Object store (versitygw, DEV-ONLY keys from manifests/components/objectstore/dev-credentials.env):
  in the cluster  http://objectstore.kubeloop-objectstore.svc:7070 (the operator's default endpoint)
  from here       http://localhost:7070
  Secret s3-creds in namespace default holds the keys: examples/s3/README.md runs as written.
MSG
fi

cat <<MSG

Kubeloop is running on kind cluster "${CLUSTER}" (kubectl context ${CONTEXT}).

  Grafana     http://localhost:3000   (anonymous viewer access, local demo only;
                                        dashboards in the "Kubeloop" folder)
  Prometheus  http://localhost:9090

Next, train and serve the iris example (examples/iris/README.md):

  kubectl apply -f examples/iris/trainingjob.yaml
  kubectl wait trainingjob/iris --for condition=Succeeded --timeout 300s
  kubectl get modelversions

Tear down with hack/kind-down.sh.
MSG

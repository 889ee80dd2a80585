#!/usr/bin/env bash
# Builds Prometheus (prometheus + promtool) with Kubernetes service discovery from its
# published Go module, once per version. Debian's prometheus package is built without
# kubernetes_sd_configs, which the monitoring manifests rely on.
#
# Output: ${KUBELOOP_CACHE:-~/.cache/kubeloop}/bin/prometheus-<version>/{prometheus,promtool},
# built only when missing. Prints that directory on stdout, timings on stderr.
#
# From 3.x, only the Kubernetes, file and HTTP service discoveries are compiled in
# (Prometheus's own remove_all_sd/enable_<name>_sd build tags), leaving out the cloud SDKs:
# 1,275 packages instead of 1,518 for 3.16. 2.x has no such tags and always compiles in every
# discovery. PROMETHEUS_TAGS overrides the tags.
# Without the builtinassets tag the web UI is not embedded: the HTTP API, /metrics and the
# health endpoints all work, and the UI pages answer with an error naming the missing
# index.html (see docs/images.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The version the monitoring manifests run (prom/prometheus:v2.53.3 on kind), so that the
# local overlay runs the same Prometheus with the same flags. Prometheus publishes its Go
# module as v0.<minor>.<patch> for 2.x (2.53.3 -> v0.53.3) and v0.<major><minor>.<patch> for
# 3.x (3.16.0 -> v0.316.0).
# The version is pinned in hack/prometheus/go.mod; keep this in step with it.
PROMETHEUS_VERSION=2.53.3
module_version="$(echo "${PROMETHEUS_VERSION}" | awk -F. '{ if ($1 == 2) printf "v0.%d.%d", $2, $3; else printf "v0.%d%02d.%d", $1, $2, $3 }')"
# Tags 2.x does not know would only make `prometheus --version` list them.
case "${PROMETHEUS_VERSION}" in
  2.*) default_tags=netgo ;;
  *) default_tags=netgo,remove_all_sd,enable_kubernetes_sd ;;
esac
tags="${PROMETHEUS_TAGS-${default_tags}}"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
out="${cache}/bin/prometheus-${PROMETHEUS_VERSION}"

log() { printf '%s\n' "$*" >&2; }

if [ ! -x "${out}/prometheus" ] || [ ! -x "${out}/promtool" ]; then
  log "Building Prometheus ${PROMETHEUS_VERSION} (github.com/prometheus/prometheus@${module_version}, tags: ${tags:-none}) ..."
  start=$SECONDS
  tmp="${out}.tmp.$$"
  trap 'rm -rf "${tmp}"' EXIT
  mkdir -p "${tmp}"
  v=github.com/prometheus/common/version
  ldflags="-s -w -X ${v}.Version=${PROMETHEUS_VERSION} -X ${v}.Revision=${module_version}"
  ldflags+=" -X ${v}.Branch=module -X ${v}.BuildUser=kubeloop -X ${v}.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
  # Prometheus's go.mod has replace directives, so `go install module@version` refuses it:
  # hack/prometheus is a helper module that requires the release and repeats them (as
  # hack/k8s does for Kubernetes). Static (CGO_ENABLED=0): the image it runs in is scratch.
  # GOFLAGS is set here so that a caller's is not inherited.
  (cd "${here}/prometheus" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "${tags}" \
    -ldflags "${ldflags}" -o "${tmp}/" \
    github.com/prometheus/prometheus/cmd/prometheus \
    github.com/prometheus/prometheus/cmd/promtool)
  rm -rf "${out}" && mv "${tmp}" "${out}"
  trap - EXIT
  log "Built Prometheus ${PROMETHEUS_VERSION} in $((SECONDS - start))s"
fi
echo "${out}"

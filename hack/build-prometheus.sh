#!/usr/bin/env bash
# Builds Prometheus (prometheus + promtool) with Kubernetes service discovery from its
# published Go module, once per version. Debian's prometheus package is built without
# kubernetes_sd_configs, which the monitoring manifests rely on.
#
# Output: ${KUBELOOP_CACHE:-~/.cache/kubeloop}/bin/prometheus-<version>/{prometheus,promtool},
# built only when missing. Prints that directory on stdout, timings on stderr.
#
# Only the Kubernetes, file and HTTP service discoveries are compiled in (Prometheus's own
# remove_all_sd/enable_<name>_sd build tags), leaving out the cloud SDKs: 1,275 packages
# instead of 1,518 for 3.16. Set PROMETHEUS_TAGS to change that (empty = every discovery).
# Without the builtinassets tag the web UI is not embedded: the HTTP API, /metrics and the
# health endpoints all work, and the UI pages answer with an error naming the missing
# index.html (see docs/images.md).
set -euo pipefail

# Prometheus 3.16.0 is published as the Go module version v0.316.0.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.16.0}"
module_version="v0.$(echo "${PROMETHEUS_VERSION}" | awk -F. '{ printf "%d%02d.%d", $1, $2, $3 }')"
tags="${PROMETHEUS_TAGS-netgo,remove_all_sd,enable_kubernetes_sd}"
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
  # The module has no replace directives, so `go install module@version` builds it as
  # published, with the versions pinned in its own go.mod and go.sum. A go.mod asking for a
  # newer Go than the one installed is met by Go's toolchain download (GOTOOLCHAIN=auto).
  # GOFLAGS is set here so that a caller's (the control-plane build uses -mod=mod) is not inherited.
  GOFLAGS=-buildvcs=false GOBIN="${tmp}" go install -trimpath -tags "${tags}" -ldflags "${ldflags}" \
    "github.com/prometheus/prometheus/cmd/prometheus@${module_version}" \
    "github.com/prometheus/prometheus/cmd/promtool@${module_version}"
  rm -rf "${out}" && mv "${tmp}" "${out}"
  trap - EXIT
  log "Built Prometheus ${PROMETHEUS_VERSION} in $((SECONDS - start))s"
fi
echo "${out}"

#!/usr/bin/env bash
# Builds Kubeloop's container images on this machine, from Debian's packages and PyPI only:
# no Docker engine and no Docker Hub. buildah keeps its own storage under the cache; images
# reach a containerd as OCI archives.
#
#   hack/images.sh base            Python 3.11 base image from debootstrap (minbase) + apt
#   hack/images.sh pause           pod sandbox image from hack/pause/pause.c (static, scratch)
#   hack/images.sh prometheus      Prometheus 2.53.3 from hack/build-prometheus.sh (static, scratch)
#   hack/images.sh versitygw       the object store's versitygw from its Go module (static, scratch)
#   hack/images.sh build           kubeloop/operator:dev and kubeloop/runtime:dev (buildah bud)
#   hack/images.sh export          OCI archives in ${cache}/images/<name>.tar
#   hack/images.sh import ADDRESS  ctr import of every archive into ADDRESS, namespace k8s.io
#   hack/images.sh prepare         base, pause and our images (what needs neither Go nor a cluster)
#   hack/images.sh all ADDRESS     all of the above, each step skipped when its inputs are unchanged
#
# Cache: ${KUBELOOP_CACHE:-~/.cache/kubeloop}: buildah/ (image storage), images/ (archives and
# the sha256 of their inputs, <name>.key), debs/ (debootstrap's package cache).
# Timings go to stderr. Needs root (debootstrap, chroot), buildah, debootstrap, gcc with a
# static libc, and ctr (Debian's containerd) for import. See docs/images.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}"
images="${cache}/images"
suite=bookworm

base_image=localhost/kubeloop/python:3.11-bookworm
pause_image=localhost/kubeloop/pause:3.10
prometheus_image=localhost/kubeloop/prometheus:v2.53.3
# shellcheck source-path=SCRIPTDIR source=versions.env
. "${here}/versions.env"
# manifests/components/objectstore names kubeloop/versitygw:<version> (docker.io/... to
# containerd), as hack/kind-up.sh builds it from hack/versitygw/Dockerfile.
versitygw_image="localhost/kubeloop/versitygw:${VERSITYGW_VERSION}"
versitygw_ref="docker.io/kubeloop/versitygw:${VERSITYGW_VERSION}"
# The images we build: short name, Dockerfile, name in buildah's storage, name containerd
# sees. A pod's `image: kubeloop/operator:dev` normalises to docker.io/kubeloop/operator:dev.
ours=(
  "operator operator/Dockerfile localhost/kubeloop/operator:dev docker.io/kubeloop/operator:dev"
  "runtime serving_image/Dockerfile localhost/kubeloop/runtime:dev docker.io/kubeloop/runtime:dev"
)
# The base carries what the virtualenvs need at run time: libgomp1 for OpenMP wheels
# (scikit-learn, lightgbm), python-is-python3 so that `python` works as on the official image.
base_packages=(python3.11 python3-venv python-is-python3 ca-certificates libgomp1)
# The CA bundle pip uses while building (KUBELOOP_BUILD_CA_BUNDLE= to use the image's own).
build_ca_bundle="${KUBELOOP_BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
# An annotation on each image records the key of the inputs it was built from.
key_label=io.kubeloop.inputs

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# buildah with its storage under the cache, never the system's default storage.
bah() {
  buildah --root "${cache}/buildah/root" --runroot "${cache}/buildah/run" --storage-driver vfs "$@"
}

sha() { sha256sum | cut -d' ' -f1; }

# The label recording the inputs of a stored image, empty when there is no such image.
image_key() {
  bah inspect --type image --format "{{index .ImageAnnotations \"${key_label}\"}}" "$1" 2>/dev/null || true
}

image_id() { bah inspect --type image --format '{{.FromImageID}}' "$1"; }

# Runs one step, timing it: step NAME COMMAND...
step() {
  local name=$1 t0=${EPOCHREALTIME/./}
  shift
  "$@"
  local us=$((${EPOCHREALTIME/./} - t0))
  printf 'images: step %-7s %d.%01ds\n' "${name}" $((us / 1000000)) $((us % 1000000 / 100000)) >&2
}

# --- base -------------------------------------------------------------------------------

# "URI SUITE" for every deb entry of this host's APT sources (one-line and deb822 formats).
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "${f}" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "${f}" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "${f}" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no")
          for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
        types = ""; enabled = ""; nu = 0; ns = 0
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      tolower($1) == "uris:"    { nu = split(substr($0, index($0, ":") + 1), u, " ") }
      tolower($1) == "suites:"  { ns = split(substr($0, index($0, ":") + 1), s, " ") }
      END { flush() }
    ' "${f}"
  done
}

# The deb822 sources the base image uses: this host's mirrors for the suite, its updates and
# its security suite (so that CI uses whatever mirror its machine is set up with), or
# DEBIAN_MIRROR for the main suite.
base_sources() {
  local pairs
  pairs="$(host_sources | awk -v s="${suite}" '($2 == s || $2 == s "-updates" || $2 == s "-security") && !seen[$0]++')"
  if [ -n "${DEBIAN_MIRROR:-}" ] || [ -z "${pairs}" ]; then
    local m="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    pairs="$(printf '%s %s\n%s %s-updates\n' "${m}" "${suite}" "${m}" "${suite}"; grep -- "-security$" <<<"${pairs}" || true)"
  fi
  # One stanza per mirror, in the order the host lists them.
  awk '!($1 in suites) { order[n++] = $1 } { suites[$1] = suites[$1] (suites[$1] ? " " : "") $2 }
       END { for (i = 0; i < n; i++)
               printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n\n", order[i], suites[order[i]] }' \
    <<<"${pairs}"
}

base_mirror() { base_sources | awk '/^URIs:/ { u = $2 } /^Suites:/ && $2 == "'"${suite}"'" { print u; exit }'; }

base_key() {
  { declare -f build_base base_sources host_sources; echo "${suite} ${base_packages[*]}"; base_sources; } | sha
}

build_base() {
  local key rootfs ctr mnt
  key="$(base_key)"
  rootfs="${cache}/rootfs.tmp.$$"
  cleanup_base() {
    umount "${rootfs}/proc" 2>/dev/null || true
    rm -rf --one-file-system "${rootfs}"
  }
  trap cleanup_base EXIT
  mkdir -p "${cache}/debs" "${rootfs}"
  log "debootstrap --variant=minbase ${suite} from $(base_mirror)"
  debootstrap --variant=minbase --cache-dir="${cache}/debs" "${suite}" "${rootfs}" "$(base_mirror)" >&2
  rm -f "${rootfs}/etc/apt/sources.list"
  base_sources >"${rootfs}/etc/apt/sources.list.d/debian.sources"
  # No documentation, manual pages or translations (copyright files stay), as in Debian's slim images.
  cat >"${rootfs}/etc/dpkg/dpkg.cfg.d/kubeloop-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  printf '#!/bin/sh\nexit 101\n' >"${rootfs}/usr/sbin/policy-rc.d"
  chmod 0755 "${rootfs}/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "${rootfs}/etc/resolv.conf"
  mount -t proc proc "${rootfs}/proc"
  chroot "${rootfs}" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -euc 'apt-get update -qq
             apt-get install -y -qq --no-install-recommends "$@"
             apt-get clean' sh "${base_packages[@]}" >&2
  umount "${rootfs}/proc"
  # What the container runtime provides, or what only the build needed.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/* "${rootfs}"/var/cache/debconf/*-old \
    "${rootfs}"/var/log/* "${rootfs}"/tmp/* "${rootfs}/usr/sbin/policy-rc.d" "${rootfs}/etc/resolv.conf" \
    "${rootfs}/etc/hostname"
  find "${rootfs}/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "${rootfs}/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/* "${rootfs}"/usr/share/locale/*
  : >"${rootfs}/etc/machine-id"

  ctr="$(bah from --quiet scratch)"
  mnt="$(bah mount "${ctr}")"
  cp -a "${rootfs}/." "${mnt}/"
  bah umount "${ctr}" >/dev/null
  bah config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["python3"]' --label "org.opencontainers.image.title=kubeloop-python" \
    --label "org.opencontainers.image.description=Python 3.11 from Debian ${suite} (debootstrap minbase)" \
    --annotation "${key_label}=${key}" "${ctr}"
  bah commit --quiet --format oci --rm "${ctr}" "${base_image}" >/dev/null
  bah rmi --prune >/dev/null 2>&1 || true
  cleanup_base
  trap - EXIT
  log "built ${base_image}"
}

# --- pause ------------------------------------------------------------------------------

pause_key() { { declare -f build_pause; cat "${here}/pause/pause.c"; gcc --version | head -1; } | sha; }

build_pause() {
  local key tmp ctr
  key="$(pause_key)"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '${tmp}'" EXIT
  gcc -Os -static -Wall -Wextra -Werror -o "${tmp}/pause" "${here}/pause/pause.c"
  strip "${tmp}/pause"
  ctr="$(bah from --quiet scratch)"
  bah copy --chmod 0755 "${ctr}" "${tmp}/pause" /pause >/dev/null
  bah config --os linux --arch amd64 --entrypoint '["/pause"]' --cmd '' --user 65535:65535 \
    --label "org.opencontainers.image.title=kubeloop-pause" --annotation "${key_label}=${key}" "${ctr}"
  bah commit --quiet --format oci --rm "${ctr}" "${pause_image}" >/dev/null
  bah rmi --prune >/dev/null 2>&1 || true
  rm -rf "${tmp}"
  trap - EXIT
  log "built ${pause_image}"
}

# --- prometheus -------------------------------------------------------------------------

# The monitoring manifests' Prometheus (prom/prometheus on kind), built from its Go module by
# hack/build-prometheus.sh with Kubernetes service discovery: a static binary in a scratch
# image, laid out as prom/prometheus is (/bin/prometheus, /etc/prometheus, /prometheus).
prometheus_dir() { "${here}/build-prometheus.sh"; }

prometheus_key() {
  local dir=$1
  { declare -f build_prometheus; sha256sum "${dir}/prometheus" "${dir}/promtool"; } | sha
}

build_prometheus() {
  local dir=$1 key ctr tmp
  key="$(prometheus_key "${dir}")"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '${tmp}'" EXIT
  mkdir -p "${tmp}/etc/prometheus" "${tmp}/prometheus" "${tmp}/usr/share/prometheus/console_libraries" \
    "${tmp}/usr/share/prometheus/consoles"
  ctr="$(bah from --quiet scratch)"
  bah copy --chmod 0755 "${ctr}" "${dir}/prometheus" "${dir}/promtool" /bin/ >/dev/null
  bah copy "${ctr}" "${tmp}/." / >/dev/null
  bah config --os linux --arch amd64 --entrypoint '["/bin/prometheus"]' \
    --cmd '["--config.file=/etc/prometheus/prometheus.yml","--storage.tsdb.path=/prometheus"]' \
    --user 65534:65534 --workingdir /prometheus --port 9090 \
    --label "org.opencontainers.image.title=kubeloop-prometheus" --annotation "${key_label}=${key}" "${ctr}"
  bah commit --quiet --format oci --rm "${ctr}" "${prometheus_image}" >/dev/null
  bah rmi --prune >/dev/null 2>&1 || true
  rm -rf "${tmp}"
  trap - EXIT
  log "built ${prometheus_image}"
}

# --- versitygw ----------------------------------------------------------------------------

# The image hack/versitygw/Dockerfile describes, made without Docker Hub: the same module
# built here static (CGO_ENABLED=0, its own cache directory: the tests' versitygw beside
# the control plane may be dynamic), alone on scratch, as the numeric non-root user.
versitygw_dir() {
  local out="${cache}/bin/versitygw-static-${VERSITYGW_VERSION}"
  if [ ! -x "${out}/versitygw" ]; then
    local tmp="${out}.tmp.$$"
    mkdir -p "${tmp}"
    CGO_ENABLED=0 GOBIN="${tmp}" GOFLAGS='' go install -trimpath -ldflags "-s -w" \
      "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}" >&2
    rm -rf "${out}" && mv "${tmp}" "${out}"
  fi
  echo "${out}"
}

versitygw_key() {
  local dir=$1
  { declare -f build_versitygw; sha256sum "${dir}/versitygw"; echo "${VERSITYGW_VERSION}"; } | sha
}

build_versitygw() {
  local dir=$1 key ctr
  key="$(versitygw_key "${dir}")"
  ctr="$(bah from --quiet scratch)"
  bah copy --chmod 0755 "${ctr}" "${dir}/versitygw" /bin/versitygw >/dev/null
  bah config --os linux --arch amd64 --entrypoint '["/bin/versitygw"]' --cmd '' --user 65532:65532 \
    --port 7070 --label "org.opencontainers.image.title=kubeloop-versitygw" \
    --label "org.opencontainers.image.version=${VERSITYGW_VERSION}" \
    --label "org.opencontainers.image.licenses=Apache-2.0" --annotation "${key_label}=${key}" "${ctr}"
  bah commit --quiet --format oci --rm "${ctr}" "${versitygw_image}" >/dev/null
  bah rmi --prune >/dev/null 2>&1 || true
  log "built ${versitygw_image}"
}

# --- our images ---------------------------------------------------------------------------

# The key of one of our images: its Dockerfile, the build context the .dockerignore lets in,
# and the base image it is built on.
our_key() {
  local dockerfile=$1
  {
    declare -f build_ours
    (cd "${repo}" && find pyproject.toml README.md .dockerignore "${dockerfile}" operator/kubeloop \
      serving_image/kubeloop_runtime -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' \
      ! -path '*/.*_cache/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    image_id "${base_image}"
  } | sha
}

build_ours() {
  local short=$1 dockerfile=$2 name=$3
  local key mounts=()
  bah inspect --type image "${base_image}" >/dev/null 2>&1 || die "no ${base_image}: run hack/images.sh base"
  key="$(our_key "${dockerfile}")"
  # pip trusts what this machine trusts: a host whose egress passes a TLS-inspecting proxy
  # adds that proxy's CA to its bundle. Mounted into RUN steps only, never into an image.
  if [ -f "${build_ca_bundle}" ]; then
    mounts=(--volume "${build_ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  log "buildah bud -f ${dockerfile} -t ${name}"
  (cd "${repo}" && bah bud --quiet --isolation chroot --network host --pull-never --format oci \
    --build-arg "PYTHON_IMAGE=${base_image}" --annotation "${key_label}=${key}" "${mounts[@]}" \
    -f "${dockerfile}" -t "${name}" .) >&2
  bah rmi --prune >/dev/null 2>&1 || true
  log "built ${name} (${short})"
}

# --- export and import --------------------------------------------------------------------

# Every image we export: short name, name in buildah's storage, name in the archive.
exports() {
  echo "pause ${pause_image} ${pause_image}"
  echo "prometheus ${prometheus_image} ${prometheus_image}"
  echo "versitygw ${versitygw_image} ${versitygw_ref}"
  local line
  for line in "${ours[@]}"; do
    read -r short _ name ref <<<"${line}"
    echo "${short} ${name} ${ref}"
  done
}

export_one() {
  local short=$1 name=$2 ref=$3
  local tar="${images}/${short}.tar"
  mkdir -p "${images}"
  rm -f "${tar}.tmp"
  bah push --quiet "${name}" "oci-archive:${tar}.tmp:${ref}" >/dev/null
  mv "${tar}.tmp" "${tar}"
  # The key of the inputs sits next to the archive: `all` skips the export when they match.
  image_key "${name}" >"${images}/${short}.key"
  log "exported ${ref} to ${tar} ($(du -h "${tar}" | cut -f1))"
}

# The manifest digest an archive holds, as containerd lists it after import.
archive_digest() { tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -1 | cut -d'"' -f4; }

import_one() {
  local address=$1 short=$2 ref=$3
  local tar="${images}/${short}.tar" have
  [ -f "${tar}" ] || die "no ${tar}: run hack/images.sh export"
  have="$(ctr --address "${address}" -n k8s.io images ls "name==${ref}" 2>/dev/null | awk 'NR > 1 { print $3 }')"
  if [ -n "${have}" ] && [ "${have}" = "$(archive_digest "${tar}")" ]; then
    log "${ref} already in ${address}"
    return
  fi
  ctr --address "${address}" -n k8s.io images import "${tar}" >&2
  log "imported ${ref} into ${address}"
}

# --- subcommands --------------------------------------------------------------------------

cmd_base() { build_base; }
cmd_pause() { build_pause; }
cmd_prometheus() { build_prometheus "$(prometheus_dir)"; }
cmd_versitygw() { build_versitygw "$(versitygw_dir)"; }

cmd_build() {
  local line
  for line in "${ours[@]}"; do
    # shellcheck disable=SC2086 # one line of the table is four words
    build_ours ${line}
  done
}

cmd_export() {
  local short name ref
  while read -r short name ref; do export_one "${short}" "${name}" "${ref}"; done < <(exports)
}

cmd_import() {
  local address=$1 short ref
  while read -r short _ ref; do import_one "${address}" "${short}" "${ref}"; done < <(exports)
}

all_base() {
  if [ "$(image_key "${base_image}")" = "$(base_key)" ]; then log "${base_image} unchanged"; else build_base; fi
}

all_pause() {
  if [ "$(image_key "${pause_image}")" = "$(pause_key)" ]; then log "${pause_image} unchanged"; else build_pause; fi
}

# An image of binaries built elsewhere: all_binaries IMAGE DIR_FN KEY_FN BUILD_FN builds it
# from the directory DIR_FN prints unless the image's key is already KEY_FN's.
all_binaries() {
  local image=$1 dir
  dir="$("$2")"
  if [ "$(image_key "${image}")" = "$("$3" "${dir}")" ]; then log "${image} unchanged"; else "$4" "${dir}"; fi
}

all_prometheus() { all_binaries "${prometheus_image}" prometheus_dir prometheus_key build_prometheus; }
all_versitygw() { all_binaries "${versitygw_image}" versitygw_dir versitygw_key build_versitygw; }

all_build() {
  local line short dockerfile name ref
  for line in "${ours[@]}"; do
    read -r short dockerfile name ref <<<"${line}"
    if [ "$(image_key "${name}")" = "$(our_key "${dockerfile}")" ]; then
      log "${name} unchanged"
    else
      build_ours "${short}" "${dockerfile}" "${name}"
    fi
  done
}

all_export() {
  local short name ref
  while read -r short name ref; do
    if [ -f "${images}/${short}.tar" ] && [ "$(cat "${images}/${short}.key" 2>/dev/null)" = "$(image_key "${name}")" ]; then
      log "${images}/${short}.tar up to date"
    else
      export_one "${short}" "${name}" "${ref}"
    fi
  done < <(exports)
}

# What needs no cluster and no Go build: the base, pause and our images (hack/build.sh runs
# it beside the control-plane build; `all` then finds them unchanged).
cmd_prepare() {
  step base all_base
  step pause all_pause
  step build all_build
}

cmd_all() {
  local address=$1 t0=${EPOCHREALTIME/./}
  step base all_base
  step pause all_pause
  step prometheus all_prometheus
  step versitygw all_versitygw
  step build all_build
  step export all_export
  step import cmd_import "${address}"
  local us=$((${EPOCHREALTIME/./} - t0))
  printf 'images: all     %d.%01ds\n' $((us / 1000000)) $((us % 1000000 / 100000)) >&2
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
sub=$1
shift
case "${sub}" in
  base | pause | prometheus | versitygw | build | export)
    [ $# -eq 0 ] || usage
    step "${sub}" "cmd_${sub}"
    ;;
  import)
    [ $# -eq 1 ] || usage
    step import cmd_import "$1"
    ;;
  prepare)
    [ $# -eq 0 ] || usage
    cmd_prepare
    ;;
  all)
    [ $# -eq 1 ] || usage
    cmd_all "$1"
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac

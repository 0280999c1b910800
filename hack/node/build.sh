#!/usr/bin/env bash
# Builds the node tier's binaries from Go modules and prints the folder that holds them (the only stdout line).
#
#   bash hack/node/build.sh          build if needed
#   bash hack/node/build.sh --check  print the folder if it is complete, fail otherwise
#
# Binaries: containerd, containerd-shim-runc-v2, ctr (github.com/containerd/containerd/v2, hack/node/go.mod);
# kubelet (k8s.io/kubernetes, the control plane's module in hack/testenv/go.mod); kube-proxy (the same
# k8s.io/kubernetes version, from hack/node/proxy/go.mod: its extra dependencies stay out of the control plane's); the CNI plugins
# bridge, host-local, loopback and portmap in cni/ (github.com/containernetworking/plugins); and pause, the sandbox
# process (a static C program from the kubernetes module). runc is Debian's (`make image-tools`).
# They land in ${XDG_CACHE_HOME:-~/.cache}/selfimprove/node/<versions>-<hash>/bin, built once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testenv="$(cd "${here}/../testenv" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
# shellcheck source=../testenv/versions.env
source "${testenv}/versions.env"

binaries=(containerd containerd-shim-runc-v2 ctr kubelet kube-proxy pause cni/bridge cni/host-local cni/loopback cni/portmap)
mode="${1:-build}"
log() { echo "node: $*" >&2; }
die() { echo "node: error: $*" >&2; exit 1; }

missing_in() {
  local dir="$1" name out=()
  for name in "${binaries[@]}"; do
    [[ -x "${dir}/${name}" ]] || out+=("${name}")
  done
  echo "${out[*]-}"
}

key_hash="$(cat "${here}/versions.env" "${here}/go.mod" "${here}/go.sum" "${testenv}/go.mod" "${testenv}/go.sum" \
  "${here}/proxy/go.mod" "${here}/proxy/go.sum" \
  | sha256sum | cut -c1-12)"
cache_root="${SIL_NODE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/selfimprove/node}"
dest="${cache_root}/k8s-${KUBERNETES_VERSION}_containerd-${CONTAINERD_VERSION}_cni-${CNI_PLUGINS_VERSION}-${key_hash}"
bin="${dest}/bin"

if [[ -f "${dest}/complete" && -z "$(missing_in "${bin}")" ]]; then
  echo "${bin}"
  exit 0
fi
[[ "${mode}" != "--check" ]] || die "the node binaries are not built (no complete ${bin}). Build them once with
'bash hack/node/build.sh' (needs Go and gcc; about 10 minutes on 2 cores with the control plane's modules cached)."

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "${GO}" ]] || die "no Go toolchain (go on PATH or GO=/path/to/go)"
command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc libc6-dev): it builds the pause process"
grep -q "github.com/containerd/containerd/v2 ${CONTAINERD_VERSION}" "${here}/go.mod" \
  || die "hack/node/go.mod does not require containerd ${CONTAINERD_VERSION} (versions.env)"
grep -q "github.com/containernetworking/plugins ${CNI_PLUGINS_VERSION}" "${here}/go.mod" \
  || die "hack/node/go.mod does not require the CNI plugins ${CNI_PLUGINS_VERSION} (versions.env)"

mkdir -p "${cache_root}"
staging="$(mktemp -d "${cache_root}/.staging.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT
mkdir -p "${staging}/bin/cni"
started=$(date +%s)

build() {  # build <module dir> <output> <package> [tags]
  local dir="$1" out="$2" pkg="$3" tags="${4:-}"
  log "go build ${pkg} -> ${out}"
  (cd "${dir}" && CGO_ENABLED="${CGO:-0}" nice "${GO}" build -trimpath -tags "${tags}" -ldflags "-s -w" \
    -o "${staging}/bin/${out}" "${pkg}")
}

containerd_ldflags="-X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
log "building containerd ${CONTAINERD_VERSION}, CNI plugins ${CNI_PLUGINS_VERSION}, kubelet ${KUBERNETES_VERSION}"
(cd "${here}" && "${GO}" mod download)
# containerd's snapshotters that need C libraries (btrfs, devmapper) are left out: overlayfs is what the node uses.
(cd "${here}" && CGO_ENABLED=0 nice "${GO}" build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
  -ldflags "-s -w ${containerd_ldflags}" -o "${staging}/bin/containerd" github.com/containerd/containerd/v2/cmd/containerd)
log "built containerd"
build "${here}" containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "no_btrfs no_devmapper"
build "${here}" ctr github.com/containerd/containerd/v2/cmd/ctr "no_btrfs no_devmapper"
for plugin in ipam/host-local main/bridge main/loopback meta/portmap; do
  build "${here}" "cni/${plugin##*/}" "github.com/containernetworking/plugins/plugins/${plugin}"
done
k8s_ldflags="-X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION}"
for cmd in kubelet; do
  log "go build k8s.io/kubernetes/cmd/${cmd} -> ${cmd}"
  (cd "${testenv}" && CGO_ENABLED=0 nice "${GO}" build -trimpath -ldflags "-s -w ${k8s_ldflags}" \
    -o "${staging}/bin/${cmd}" "k8s.io/kubernetes/cmd/${cmd}")
done
log "go build k8s.io/kubernetes/cmd/kube-proxy -> kube-proxy"
(cd "${here}/proxy" && CGO_ENABLED=0 nice "${GO}" build -trimpath -ldflags "-s -w ${k8s_ldflags}" \
  -o "${staging}/bin/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy)
pause_c="$(cd "${testenv}" && "${GO}" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
gcc -Os -static -o "${staging}/bin/pause" -DVERSION="${PAUSE_IMAGE##*:}-selfimprove" "${pause_c}"
strip "${staging}/bin/pause"

missing="$(missing_in "${staging}/bin")"
[[ -z "${missing}" ]] || die "built, but missing: ${missing}"
rm -rf "${dest}"
mkdir -p "$(dirname "${dest}")"
mv "${staging}" "${dest}"
trap - EXIT
touch "${dest}/complete"
log "built in $(( $(date +%s) - started )) s: ${bin}"
echo "${bin}"

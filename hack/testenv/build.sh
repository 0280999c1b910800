#!/usr/bin/env bash
# Builds the test control plane from Go modules and prints the folder that holds the binaries.
#
#   bash hack/testenv/build.sh          build if needed, print the bin folder (the only stdout line)
#   bash hack/testenv/build.sh --check  print the bin folder if it is complete, fail otherwise
#
# Binaries: hyperkube (kube-apiserver, kube-controller-manager, kube-scheduler and kubectl are
# links to it), etcd, kwok, kwokctl and helm, at the versions pinned in versions.env and go.mod.
# They land in ${XDG_CACHE_HOME:-~/.cache}/selfimprove/testenv/<versions>-<hash>/bin, built once.
#
# SIL_TESTENV_ASSETS=/some/bin uses prebuilt binaries from that folder instead (like envtest's
# KUBEBUILDER_ASSETS): nothing is built, the folder is checked and printed.
# SIL_TESTENV_CACHE overrides the cache root; GO=/path/to/go picks the Go toolchain (default: go on
# PATH, else /usr/local/go/bin/go). Go builds run under `nice` so other work proceeds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

binaries=(hyperkube kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl helm)
mode="${1:-build}"

log() { echo "testenv: $*" >&2; }
die() { echo "testenv: error: $*" >&2; exit 1; }

missing_in() {
  local dir="$1" name out=()
  for name in "${binaries[@]}"; do
    [[ -x "${dir}/${name}" ]] || out+=("${name}")
  done
  echo "${out[*]-}"
}

if [[ -n "${SIL_TESTENV_ASSETS:-}" ]]; then
  missing="$(missing_in "${SIL_TESTENV_ASSETS}")"
  [[ -z "${missing}" ]] || die "SIL_TESTENV_ASSETS=${SIL_TESTENV_ASSETS} lacks: ${missing}.
Unset SIL_TESTENV_ASSETS to build them with 'bash hack/testenv/build.sh', or point it at a folder that has them."
  echo "${SIL_TESTENV_ASSETS}"
  exit 0
fi

# The cache key: the pinned versions, plus a hash of everything that goes into the build.
key_hash="$(cat "${here}/versions.env" "${here}/go.mod" "${here}/go.sum" "${here}/hyperkube/main.go" \
  | sha256sum | cut -c1-12)"
cache_root="${SIL_TESTENV_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/selfimprove/testenv}"
dest="${cache_root}/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}-${key_hash}"
bin="${dest}/bin"

if [[ -f "${dest}/complete" && -z "$(missing_in "${bin}")" ]]; then
  echo "${bin}"
  exit 0
fi
if [[ "${mode}" == "--check" ]]; then
  die "the test control plane is not built (no complete ${bin}).
Build it once with 'bash hack/testenv/build.sh' (needs Go >= ${GO_MIN_VERSION}; 6-20 minutes on 2 cores),
or set SIL_TESTENV_ASSETS to a folder with prebuilt binaries: ${binaries[*]}."
fi

if [[ -n "${GO:-}" ]]; then  # GO=/path/to/go picks the toolchain
  go_bin="$(command -v "${GO}" || true)"
else
  go_bin="$(command -v go || true)"
  [[ -n "${go_bin}" || ! -x /usr/local/go/bin/go ]] || go_bin=/usr/local/go/bin/go
fi
[[ -n "${go_bin}" ]] || die "Go is not installed, and it is needed to build the test control plane.
Install Go >= ${GO_MIN_VERSION}: download it from https://go.dev/dl/ and unpack it, e.g.
  curl -fsSL https://go.dev/dl/go${GO_MIN_VERSION}.0.linux-amd64.tar.gz | sudo tar -C /usr/local -xz
  export PATH=/usr/local/go/bin:\$PATH
(or: apt-get install golang-go, and if that Go is older, let it fetch Go ${GO_MIN_VERSION} from the
module proxy with GOTOOLCHAIN=auto bash hack/testenv/build.sh);
or set SIL_TESTENV_ASSETS to a folder with prebuilt binaries: ${binaries[*]}."
# Asked inside the module, so that GOTOOLCHAIN=auto may switch to the Go that go.mod names.
go_version="$(cd "${here}" && "${go_bin}" env GOVERSION)"
go_version="${go_version#go}"
if [[ "$(printf '%s\n%s\n' "${GO_MIN_VERSION}" "${go_version}" | sort -V | head -1)" != "${GO_MIN_VERSION}" ]]; then
  die "Go ${go_version} (${go_bin}) is too old: the test control plane needs Go >= ${GO_MIN_VERSION}.
Install a newer Go from https://go.dev/dl/ and put it first on PATH, or let this one fetch it
from the module proxy: GOTOOLCHAIN=auto bash hack/testenv/build.sh"
fi

# go.mod must build exactly the versions versions.env names.
for pin in "k8s.io/kubernetes ${KUBERNETES_VERSION}" "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" \
  "sigs.k8s.io/kwok ${KWOK_VERSION}" "helm.sh/helm/v3 ${HELM_VERSION}"; do
  grep -q "^[[:space:]]*${pin}\b" "${here}/go.mod" || die "go.mod does not pin ${pin} (versions.env says so)"
done

log "building Kubernetes ${KUBERNETES_VERSION}, etcd ${ETCD_VERSION}, kwok ${KWOK_VERSION}, helm ${HELM_VERSION} with Go ${go_version}"
log "into ${bin} (a cold build takes 6-20 minutes on 2 cores, with the module downloads)"
start=${SECONDS}
staging="${dest}.tmp.$$"
rm -rf "${staging}"
mkdir -p "${staging}/bin"
trap 'rm -rf "${staging}"' EXIT

kube_minor="${KUBERNETES_VERSION#v1.}"
kube_minor="${kube_minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kube_ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${kube_minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

gobuild() {
  local out="$1" ldflags="$2" pkg="$3"
  log "go build ${pkg} -> ${out}"
  (cd "${here}" && CGO_ENABLED=0 nice -n 10 "${go_bin}" build -trimpath \
    -ldflags "-s -w ${ldflags}" -o "${staging}/bin/${out}" "${pkg}")
}

gobuild hyperkube "${kube_ldflags}" ./hyperkube
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -s hyperkube "${staging}/bin/${name}"
done
gobuild etcd "" go.etcd.io/etcd/server/v3
gobuild kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}" \
  sigs.k8s.io/kwok/cmd/kwok
gobuild kwokctl "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}" \
  sigs.k8s.io/kwok/cmd/kwokctl
gobuild helm "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${kube_minor} \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${kube_minor}" \
  helm.sh/helm/v3/cmd/helm

"${staging}/bin/kube-apiserver" --version >&2
"${staging}/bin/etcd" --version | head -1 >&2
date -u +%Y-%m-%dT%H:%M:%SZ > "${staging}/complete"
rm -rf "${dest}"
mv "${staging}" "${dest}"
trap - EXIT
log "built in $((SECONDS - start)) s"
echo "${bin}"

#!/usr/bin/env bash
# Builds the images of images/ with podman (layers cached: a second build without changes takes seconds) and prints
# each image's name, one per line, on stdout (everything else goes to stderr).
#
#   bash hack/images/build.sh operator stage-cpu     # what `make images` runs
#   bash hack/images/build.sh stage-gpu              # what `make image-gpu` runs
#
# SIL_IMAGE_BASE picks the base image of every Dockerfile:
#   debian (default)  a Debian bookworm base made here from Debian's packages (hack/images/base.sh): no registry
#   public            the Dockerfile's own default (python:3.11.14-slim-bookworm, nvidia/cuda for the GPU image)
#   <image reference> any image with Python 3.11, venv and groupadd/useradd
# SIL_TORCH_INDEX_URL (default https://pypi.org/simple): where the CPU stage image takes torch. PyPI alone works
# everywhere; https://download.pytorch.org/whl/cpu gives a CPU-only torch and an image about 4 GB smaller.
# SIL_IMAGE_TAG (default dev) and SIL_IMAGE_REPOSITORY (default localhost/selfimprove) name the images.
# SIL_IMAGE_NO_CACHE=1 builds every layer again (cold-build timings).
set -euo pipefail
cd "$(dirname "$0")/../.."

PODMAN=${PODMAN:-podman}
TAG=${SIL_IMAGE_TAG:-dev}
REPOSITORY=${SIL_IMAGE_REPOSITORY:-localhost/selfimprove}
BASE=${SIL_IMAGE_BASE:-debian}
TORCH_INDEX_URL=${SIL_TORCH_INDEX_URL:-https://pypi.org/simple}

command -v "$PODMAN" >/dev/null || {
  echo "build.sh: $PODMAN is missing: apt-get install podman buildah runc (or set PODMAN=...)" >&2
  exit 1
}
[ $# -gt 0 ] || set -- operator stage-cpu

base_args=()
case "$BASE" in
  public) ;;
  debian) base_args=(--build-arg "BASE_IMAGE=$(bash hack/images/base.sh)") ;;
  *) base_args=(--build-arg "BASE_IMAGE=$BASE") ;;
esac
read -r -a limits <<<"$(bash hack/images/limits.sh)"
# The CA bundle pip trusts during the build (a secret: never in a layer): this machine's, which also holds the CA of
# a TLS-inspecting proxy when there is one.
CA_BUNDLE=${SIL_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
secret=()
[ -f "$CA_BUNDLE" ] && secret=(--secret "id=ca-certificates,src=$CA_BUNDLE")

for name in "$@"; do
  dockerfile=images/${name}.Dockerfile
  [ -f "$dockerfile" ] || { echo "build.sh: no $dockerfile (operator, stage-cpu, stage-gpu)" >&2; exit 2; }
  extra=()
  case "$name" in
    stage-cpu) extra=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL") ;;
    stage-gpu) [ "$BASE" = public ] || extra=(--build-arg "UV_IMAGE=$(bash hack/images/uv.sh)") ;;
  esac
  image=${REPOSITORY}/${name}:${TAG}
  started=$(date +%s)
  echo "build.sh: building $image from $dockerfile" >&2
  # Host network: the RUN steps reach the package registries the host reaches, and no bridge is set up.
  cache=(--layers)
  [ -z "${SIL_IMAGE_NO_CACHE:-}" ] || cache=(--no-cache)
  "$PODMAN" build "${cache[@]}" --network host "${limits[@]}" "${secret[@]}" "${base_args[@]}" "${extra[@]}" \
    --file "$dockerfile" --tag "$image" . >&2
  size=$("$PODMAN" image inspect "$image" --format '{{.Size}}')
  echo "build.sh: $image built in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB" >&2
  echo "$image"
done

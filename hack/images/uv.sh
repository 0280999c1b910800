#!/usr/bin/env bash
# Makes the uv image (hack/images/uv.Dockerfile) from PyPI on the local Debian base and prints its name; kept once
# built. The GPU image's default UV_IMAGE is ghcr.io/astral-sh/uv, which machines without registry access lack.
set -euo pipefail
cd "$(dirname "$0")/../.."
PODMAN=${PODMAN:-podman}
UV_VERSION=${UV_VERSION:-0.9.18}
image=localhost/selfimprove/uv:${UV_VERSION}
if ! "$PODMAN" image exists "$image"; then
  read -r -a limits <<<"$(bash hack/images/limits.sh)"
  "$PODMAN" build --layers --network host "${limits[@]}" \
    --secret "id=ca-certificates,src=${SIL_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}" --build-arg "BASE_IMAGE=$(bash hack/images/base.sh)" \
    --build-arg "UV_VERSION=$UV_VERSION" --file hack/images/uv.Dockerfile --tag "$image" hack/images >&2
fi
echo "$image"

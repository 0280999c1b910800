#!/usr/bin/env bash
# A Debian bookworm base image made on this machine from Debian's packages alone (debootstrap), for building the
# images where no container registry is reachable: the Dockerfiles take it as `--build-arg BASE_IMAGE=...`.
# It carries what python:3.11-slim-bookworm gives the Dockerfiles: Python 3.11 with venv and pip, CA certificates,
# and the passwd tools (groupadd, useradd). Built once; an existing image of the same recipe is kept.
#
#   bash hack/images/base.sh            # prints the image name, builds it when missing
#   REBUILD=1 bash hack/images/base.sh  # builds it again
set -euo pipefail

SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,passwd,tzdata
# The recipe names the image: change the package list or suite and a new base is built beside the old one.
RECIPE=$(printf '%s\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
IMAGE=${BASE_IMAGE_NAME:-localhost/selfimprove/base:$SUITE-$RECIPE}
PODMAN=${PODMAN:-podman}

if [ -z "${REBUILD:-}" ] && $PODMAN image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi

for tool in debootstrap "$PODMAN"; do
  command -v "$tool" >/dev/null || { echo "base.sh: $tool is missing: apt-get install debootstrap podman" >&2; exit 1; }
done

root=$(mktemp -d /var/tmp/sil-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
started=$(date +%s)
echo "base.sh: debootstrap $SUITE ($PACKAGES) from $MIRROR into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2
# What a slim base leaves out: apt's package lists and caches, documentation, man pages, logs.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/tmp/* "$root"/var/tmp/*
# The same apt sources a debian:bookworm image has, so that a Dockerfile's apt-get works on this base too.
cat > "$root"/etc/apt/sources.list <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
SOURCES
tar -C "$root" --numeric-owner -c . | $PODMAN import \
  --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap --variant=minbase $SUITE $PACKAGES" - "$IMAGE" >&2
echo "base.sh: built $IMAGE in $(( $(date +%s) - started )) s" >&2
echo "$IMAGE"

# syntax=docker/dockerfile:1
# The operator image: `sil operator` (kopf) and the rest of the `sil` CLI. No ML stack: it installs the project with
# the `operator` extra only (the core dependencies plus kopf, kubernetes, prometheus-client, cel-python, rich,
# matplotlib), which pulls neither torch nor transformers. The stage Jobs it creates run the stage images.
#
#   docker build -f images/operator.Dockerfile -t selfimprove/operator:dev .
#   make images    # the same with podman or buildah, on a base made from Debian's packages (images/README.md)
#
# BASE_IMAGE: any image with Python 3.11 (python3 with venv), glibc and groupadd/useradd. The default is
# python:3.11.14-slim-bookworm, pinned by tag and by the digest of its multi-architecture index (a digest cannot be
# re-pushed; to move to a newer build, resolve it with `docker buildx imagetools inspect python:3.11.14-slim-bookworm`).
# Where no registry is reachable, `hack/images/base.sh` makes a Debian bookworm base with debootstrap.
#
# ca-certificates (optional build secret): a CA bundle pip trusts while it downloads, for builders behind a TLS-
# inspecting proxy (`--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt`); it is never in a layer.
#
# Layers: the dependencies are installed from pyproject.toml alone (images/requirements.py), before the source is
# copied, so a code change rebuilds only the last layer; the project itself is built as a wheel and installed (into a
# prefix) in a stage of its own, whose result the final stage copies, so no wheel or source is left in the image.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS deps

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot \
    && python3 -m venv /opt/venv

COPY pyproject.toml images/requirements.py /opt/requirements/
RUN --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export PIP_CERT=/run/secrets/ca-certificates; } \
    && python /opt/requirements/requirements.py operator > /opt/requirements/operator.txt \
    && pip install --requirement /opt/requirements/operator.txt \
    && ! pip show torch >/dev/null 2>&1

FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY stages ./stages
RUN --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export PIP_CERT=/run/secrets/ca-certificates; } \
    && pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps --no-index --prefix /install /wheels/selfimprove-*.whl

FROM deps

# The project as the wheel stage installed it (package, `sil` script), without its dependencies (the layers below
# have them) and without the wheel; then the check that the entry point imports with only what this image installs.
COPY --from=wheel /install/ /opt/venv/
RUN sil --help >/dev/null \
    && ! pip show torch >/dev/null 2>&1

WORKDIR /home/nonroot
USER 65532:65532

# The chart passes the arguments (--namespace, --liveness, --metrics-port, ...).
ENTRYPOINT ["sil", "operator"]

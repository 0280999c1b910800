# syntax=docker/dockerfile:1
# The operator image: `sil operator` (kopf) and the rest of the `sil` CLI. No ML stack: it installs the project with
# the `operator` extra only (the core dependencies plus kopf, kubernetes, prometheus-client, cel-python, rich,
# matplotlib), which pulls neither torch nor transformers. The stage Jobs it creates run the stage images.
#
#   docker build -f images/operator.Dockerfile -t selfimprove/operator:dev .
#
# Base: python:3.11.14-slim-bookworm, pinned by tag and by the digest of its multi-architecture index. A digest
# cannot be re-pushed; to move to a newer build, resolve it with
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm` and replace both FROM lines.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY stages ./stages
# A regular (not editable) install: the image carries the built package, not the source tree.
RUN pip install "./[operator]" \
    && ! pip show torch >/dev/null 2>&1

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot

# The same path as in the build stage: the venv's scripts and its python link refer to it.
COPY --from=build /opt/venv /opt/venv

RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot

WORKDIR /home/nonroot
USER 65532:65532

# The chart passes the arguments (--namespace, --liveness, --metrics-port, ...).
ENTRYPOINT ["sil", "operator"]

# syntax=docker/dockerfile:1
# The CPU stage image: `python -m sil_stages <stage> --config ...`, the command every stage Job runs. It installs the
# project with the `stages` extra (transformers, TRL, peft, accelerate, datasets) on torch, and without the
# `operator` extra (no kopf, no Kubernetes client).
#
#   docker build -f images/stage-cpu.Dockerfile -t selfimprove/stage-cpu:dev .
#   docker build -f images/stage-cpu.Dockerfile --build-arg TORCH_INDEX_URL=https://pypi.org/simple ...  # PyPI only
#   make images    # the same with podman or buildah, on a base made from Debian's packages (images/README.md)
#
# torch comes from TORCH_INDEX_URL, by default PyTorch's CPU wheel index (about 0.2 GB of torch). Where only PyPI is
# reachable, TORCH_INDEX_URL=https://pypi.org/simple takes PyPI's Linux wheel, which also runs on CPU but depends on
# the CUDA libraries (about 4 GB more in the image). `torch==2.9.1+cpu` satisfies the project's `torch==2.9.1`.
#
# BASE_IMAGE, the ca-certificates build secret and the layers: as in operator.Dockerfile.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS deps

# The version the stage programs and the tests are measured with (pyproject.toml allows >=2.9.1,<2.12).
ARG TORCH_VERSION=2.9.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot \
    HF_HOME=/home/nonroot/.cache/huggingface

RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot \
    && python3 -m venv /opt/venv

# torch first and alone, so that the resolver below never swaps the build (the Makefile does the same).
RUN --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export PIP_CERT=/run/secrets/ca-certificates; } \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml images/requirements.py /opt/requirements/
RUN --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export PIP_CERT=/run/secrets/ca-certificates; } \
    && python /opt/requirements/requirements.py stages > /opt/requirements/stages.txt \
    && pip install --requirement /opt/requirements/stages.txt "torch==${TORCH_VERSION}" \
    && ! pip show kopf >/dev/null 2>&1

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

# The project as the wheel stage installed it, without its dependencies (the layers below have them) and without
# the wheel; then the check that every stage program's module imports with what this image installs.
COPY --from=wheel /install/ /opt/venv/
RUN python -c "import sil_stages.cli, sil_stages.acquire.stage, sil_stages.select.stage, sil_stages.optimize.stage, sil_stages.evaluate.stage" \
    && python -m sil_stages --help >/dev/null \
    && ! pip show kopf >/dev/null 2>&1

WORKDIR /home/nonroot
USER 65532:65532

# The Job's command is `python -m sil_stages <stage>` with args `--config $(SIL_STAGE_CONFIG)`; the default
# entrypoint is the same program.
ENTRYPOINT ["python", "-m", "sil_stages"]

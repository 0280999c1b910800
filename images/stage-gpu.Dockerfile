# syntax=docker/dockerfile:1
# The GPU stage image: `python -m sil_stages <stage> --config ...` on CUDA, with torch 2.11.0 (PyPI's Linux wheel,
# built for CUDA 13.0; its CUDA libraries come as wheels, the host needs an NVIDIA driver >= 580), the `stages` extra
# and the `gpu` extra (vLLM for generation, DeepSpeed for multi-GPU training). FlashAttention is optional
# (FLASH_ATTN_WHEEL, off by default). Built for linux/amd64.
#
#   docker build -f images/stage-gpu.Dockerfile -t selfimprove/stage-gpu:dev .
#   docker build -f images/stage-gpu.Dockerfile --build-arg FLASH_ATTN_WHEEL=https://... -t selfimprove/stage-gpu:fa .
#   make image-gpu    # the same with podman, on a Debian base and uv from PyPI (images/README.md)
#
# BASE_IMAGE: by default nvidia/cuda:12.8.1-runtime-ubuntu24.04, pinned by tag and digest; it gives the CUDA runtime
# layout and the driver hooks of the NVIDIA container toolkit (the CUDA libraries torch loads come with its wheels).
# Ubuntu 24.04 ships Python 3.12, so Python 3.11 comes from uv (a python-build-standalone CPython, PYTHON_VERSION,
# at /opt/python). A base that has python3.11 (Debian bookworm, `make image-gpu` here) uses it instead.
# UV_IMAGE: where the uv binary comes from (/uv in the image), by default ghcr.io/astral-sh/uv; hack/images/uv.sh
# makes the same from PyPI's uv wheel. uv is used from a bind mount and never left in the image.
# The ca-certificates build secret and the layers: as in operator.Dockerfile.

ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.18@sha256:5713fa8217f92b80223bc83aac7db36ec80a84437dbc0d04bbc659cae030d8c9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS deps

ARG PYTHON_VERSION=3.11.14
# vLLM 0.20+ (the `gpu` extra) needs torch 2.11; CPU installs and the tests use 2.9.1; pyproject.toml allows
# >=2.9.1,<2.12.
ARG TORCH_VERSION=2.11.0
# A FlashAttention 2 wheel built for this torch, CUDA 13 and cp311 (a release asset of Dao-AILab/flash-attention,
# `...+cu13torch2.11cxx11abiTRUE-cp311-cp311-linux_x86_64.whl`); empty: not installed.
ARG FLASH_ATTN_WHEEL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot \
    HF_HOME=/home/nonroot/.cache/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Triton (vLLM's kernels, torch.compile) compiles small host stubs at run time: it needs a C compiler and, with the
# base's own Python, that Python's headers (uv's CPython carries its own). The versions are the base release's.
# hadolint ignore=DL3008
RUN headers="" \
    && if command -v python3.11 >/dev/null; then headers=python3.11-dev; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends build-essential ${headers} \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot

# The base's python3.11 when it has one, else a standalone CPython from uv.
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export SSL_CERT_FILE=/run/secrets/ca-certificates; } \
    && if command -v python3.11 >/dev/null; then uv venv --python "$(command -v python3.11)" /opt/venv; \
       else uv python install --python-preference only-managed "${PYTHON_VERSION}" \
            && uv venv --python-preference only-managed --python "${PYTHON_VERSION}" /opt/venv; fi \
    && mkdir -p /opt/python

# torch first and alone, so that the resolver below never swaps the build (the Makefile does the same). DeepSpeed is
# a source distribution whose setup imports torch: it builds against this environment's torch (no isolation).
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export SSL_CERT_FILE=/run/secrets/ca-certificates; } \
    && uv pip install "torch==${TORCH_VERSION}" "setuptools>=69" "wheel>=0.42"

COPY pyproject.toml images/requirements.py /opt/requirements/
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export SSL_CERT_FILE=/run/secrets/ca-certificates; } \
    && python /opt/requirements/requirements.py stages gpu > /opt/requirements/stages-gpu.txt \
    && uv pip install --no-build-isolation-package deepspeed \
       --requirement /opt/requirements/stages-gpu.txt "torch==${TORCH_VERSION}" \
    && if [ -n "${FLASH_ATTN_WHEEL}" ]; then uv pip install "${FLASH_ATTN_WHEEL}"; fi \
    && python -c "import torch; assert torch.version.cuda, torch.__version__" \
    && ! uv pip show kopf >/dev/null 2>&1

FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY stages ./stages
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export SSL_CERT_FILE=/run/secrets/ca-certificates; } \
    && uv build --wheel --out-dir /wheels . \
    && uv pip install --no-deps --prefix /install /wheels/selfimprove-*.whl

FROM deps

# The project as the wheel stage installed it, without its dependencies and without the wheel; then the check that
# the GPU stack and the stage programs import together with the versions this image resolved (no GPU is needed to
# import them).
COPY --from=wheel /install/ /opt/venv/
RUN python -c "import vllm, deepspeed, trl, transformers, peft, sil_stages, sil_stages.cli"

WORKDIR /home/nonroot
USER 65532:65532

# The Job's command is `python -m sil_stages <stage>` with args `--config $(SIL_STAGE_CONFIG)`; the default
# entrypoint is the same program.
ENTRYPOINT ["python", "-m", "sil_stages"]

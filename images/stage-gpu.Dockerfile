# syntax=docker/dockerfile:1
# The GPU stage image: `python -m sil_stages <stage> --config ...` on CUDA, with torch 2.11.0 (PyPI's Linux wheel,
# built for CUDA 13.0; its CUDA libraries come as wheels, the host needs an NVIDIA driver >= 580), the `stages` extra and the `gpu` extra (vLLM for generation, DeepSpeed for multi-GPU training).
# FlashAttention is optional (FLASH_ATTN_WHEEL, off by default). Built for linux/amd64.
#
#   docker build -f images/stage-gpu.Dockerfile -t selfimprove/stage-gpu:dev .
#   docker build -f images/stage-gpu.Dockerfile --build-arg FLASH_ATTN_WHEEL=https://... -t selfimprove/stage-gpu:fa .
#
# Base: nvidia/cuda:12.8.1-runtime-ubuntu24.04, pinned by tag and digest; the CUDA libraries torch loads come with
# its wheels (CUDA 13.0 for torch 2.11.0, measured working on an H100 with driver 580), the image gives the CUDA runtime
# layout and the driver hooks of the NVIDIA container toolkit. Ubuntu 24.04 ships Python 3.12, so Python 3.11 comes
# from uv (a python-build-standalone CPython, pinned below), the same in the build and the final stage.

FROM ghcr.io/astral-sh/uv:0.9.18@sha256:5713fa8217f92b80223bc83aac7db36ec80a84437dbc0d04bbc659cae030d8c9 AS uv

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867 AS build

ARG PYTHON_VERSION=3.11.14
# vLLM 0.20+ (the `gpu` extra) needs torch 2.11; the stage programs ran on torch 2.11.0+cu130 on an H100
# (bench/RESULTS.md). CPU installs and the tests use 2.9.1; pyproject.toml allows >=2.9.1,<2.12.
ARG TORCH_VERSION=2.11.0
# A FlashAttention 2 wheel built for this torch, CUDA 13 and cp311 (a release asset of Dao-AILab/flash-attention,
# `...+cu13torch2.11cxx11abiTRUE-cp311-cp311-linux_x86_64.whl`); empty: not installed.
ARG FLASH_ATTN_WHEEL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

COPY --from=uv /uv /usr/local/bin/uv

RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# torch first and alone, so that the resolver below never swaps the build (the Makefile does the same).
RUN uv pip install "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY stages ./stages
RUN uv pip install "./[stages,gpu]" "torch==${TORCH_VERSION}" \
    && if [ -n "${FLASH_ATTN_WHEEL}" ]; then uv pip install "${FLASH_ATTN_WHEEL}"; fi \
    && python -c "import torch; assert torch.version.cuda, torch.__version__" \
    && ! uv pip show kopf >/dev/null 2>&1

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867

# Triton (vLLM's kernels, torch.compile) compiles small host stubs at run time and needs a C compiler; the
# build-essential metapackage's version is the one Ubuntu 24.04 released with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.10ubuntu1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot \
    HF_HOME=/home/nonroot/.cache/huggingface

# The interpreter and the venv at the paths they were built at: the venv's python links into /opt/python.
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv

# Ubuntu 24.04 images carry a user `ubuntu` with UID 1000; the stage user is 65532 as in the other images.
RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot

WORKDIR /home/nonroot
USER 65532:65532

# The Job's command is `python -m sil_stages <stage>` with args `--config $(SIL_STAGE_CONFIG)`; the default
# entrypoint is the same program.
ENTRYPOINT ["python", "-m", "sil_stages"]

# syntax=docker/dockerfile:1
# The CPU stage image: `python -m sil_stages <stage> --config ...`, the command every stage Job runs. It installs the
# project with the `stages` extra (transformers, TRL, accelerate, datasets) on the CPU build of torch, and without the
# `operator` extra (no kopf, no Kubernetes client).
#
#   docker build -f images/stage-cpu.Dockerfile -t selfimprove/stage-cpu:dev .
#
# Base: python:3.11.14-slim-bookworm, pinned by tag and by the digest of its multi-architecture index (see
# operator.Dockerfile for how to move it).

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

# The version the stage programs and the tests are measured with (pyproject.toml pins torch==2.9.1 in `stages`).
ARG TORCH_VERSION=2.9.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from PyTorch's CPU wheel index: PyPI's Linux torch wheel depends on the CUDA libraries (several GB).
# `torch==2.9.1+cpu` satisfies the project's `torch==2.9.1`, so the install below keeps it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY stages ./stages
RUN pip install "./[stages]" \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && ! pip show kopf >/dev/null 2>&1

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot \
    HF_HOME=/home/nonroot/.cache/huggingface

COPY --from=build /opt/venv /opt/venv

RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot

WORKDIR /home/nonroot
USER 65532:65532

# The Job's command is `python -m sil_stages <stage>` with args `--config $(SIL_STAGE_CONFIG)`; the default
# entrypoint is the same program.
ENTRYPOINT ["python", "-m", "sil_stages"]

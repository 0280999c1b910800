# uv as the GPU image's UV_IMAGE expects it (the binary at /uv, as in ghcr.io/astral-sh/uv), taken from PyPI's uv
# wheel, which carries the same binary: for machines that reach PyPI but no container registry.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.9.18
RUN --mount=type=secret,id=ca-certificates \
    { [ ! -f /run/secrets/ca-certificates ] || export PIP_CERT=/run/secrets/ca-certificates; } \
    && python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"

FROM scratch
COPY --from=build /opt/uv/bin/uv /uv

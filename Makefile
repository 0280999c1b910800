# The two commands a new user needs: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned and installed first, so the resolver never swaps the build underneath the stages.
TORCH ?= torch==2.9.1
STAMP := $(VENV)/.installed

.PHONY: install demo test unit lint typecheck testenv servers images image-gpu image-tools node test-node clean-demo

# Debian packages the tests start as processes (never as services): Prometheus, its Pushgateway (and promtool),
# openssl for the control plane's keys. Installed only when missing.
APT_PACKAGES := prometheus prometheus-pushgateway openssl

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[stages,operator,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) examples/arithmetic/make_base_model.py
	$(VENV)/bin/sil run examples/arithmetic/loop.yaml

clean-demo:
	rm -rf runs/arithmetic runs/arithmetic-majority

testenv:
	bash hack/testenv/build.sh

servers:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold $$missing; \
	  for svc in prometheus prometheus-pushgateway; do $$SUDO service $$svc stop >/dev/null 2>&1 || true; done; \
	fi

# The images' build tools from Debian's packages (no Docker engine needed): podman builds and runs them, with runc
# (crun refuses a cgroup v1 hybrid host); debootstrap makes the local base image (hack/images/base.sh); the node
# tier adds iptables (kube-proxy), iproute2 (its network namespace), conntrack, and gcc (the static pause process).
IMAGE_PACKAGES := podman buildah runc debootstrap fuse-overlayfs uidmap iptables iproute2 conntrack gcc libc6-dev

image-tools:
	@missing=""; for p in $(IMAGE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The operator and CPU stage images (layers cached: seconds when nothing changed). SIL_IMAGE_BASE=public builds on
# the Dockerfiles' public bases instead of a Debian base made here; see images/README.md.
images: image-tools
	bash hack/images/build.sh operator stage-cpu

# The GPU stage image (vLLM, DeepSpeed, torch with CUDA): not part of `make test`.
image-gpu: image-tools
	bash hack/images/build.sh stage-gpu

# The node tier's binaries (containerd, kubelet, CNI plugins, pause), built from Go modules and cached.
node: testenv image-tools
	bash hack/node/build.sh

# The node tier: a real kubelet and containerd running the images, inside a network namespace with no route out.
test-node: install testenv servers images node
	SIL_IMAGES_BUILT=1 bash hack/node/netns.sh $(PY) -m pytest tests/node

test: install testenv servers images node lint typecheck
	SIL_IMAGES_BUILT=1 $(PY) -m pytest
	SIL_IMAGES_BUILT=1 bash hack/node/netns.sh $(PY) -m pytest tests/node

unit: install servers
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check operator stages tests
	$(VENV)/bin/lint-imports --no-cache

typecheck: install
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/integration tests/podrunner tests/servers tests/fakestages tests/chaos tests/containers tests/node

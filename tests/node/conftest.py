"""The node tier: a real kubelet and containerd in a network namespace with no route out (hack/node/netns.sh).

Its tests run only inside that namespace (`make test-node`, or the focused part `make test` runs); collected
anywhere else, they are left out, since the namespace is what keeps their pods off the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.containers import images
from tests.integration.controlplane import ControlPlane, FakeNodes
from tests.node.node import RealNode, find_node_bin

IN_NETNS = bool(os.environ.get("SIL_NETNS"))
collect_ignore_glob = [] if IN_NETNS else ["test_*.py"]


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    address = os.environ["SIL_NODE_IP"]
    work_dir = tmp_path_factory.mktemp("node")
    bin_dir = find_node_bin()
    plane = ControlPlane.start(
        work_dir / "plane", pod_runner=False, fake_nodes=FakeNodes(count=0), address=address, ready_timeout=120
    )
    real = RealNode(plane, bin_dir, work_dir / "node", address)
    try:
        real.start()
        yield real
    finally:
        real.stop()
        plane.stop()


@pytest.fixture(scope="session")
def node_images(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator and CPU stage images, built (cached layers) and imported into the node's containerd."""
    built = images.build(["operator", "stage-cpu"], tmp_path_factory.mktemp("images") / "build.log")
    for image in built:
        node.import_from_podman(image)
    return dict(zip(["operator", "stage-cpu"], built, strict=True))


@pytest.fixture
def node_namespace(node: RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace that enforces the restricted Pod Security Standard, as a platform team's would."""
    name = f"node-{abs(hash(request.node.nodeid)) % 10**8}"
    node.plane.kubectl("create", "namespace", name)
    node.plane.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    node.plane.kubectl("delete", "namespace", name, "--wait=false")


def pytest_report_header(config: pytest.Config) -> str:
    return f"node tier: netns {os.environ.get('SIL_NETNS', '(none: tests/node left out)')}"

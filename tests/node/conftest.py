"""The node tier: a real kubelet and containerd in a network namespace with no route out (hack/node/netns.sh).

Its tests run only inside that namespace (`make test-node`, or the focused part `make test` runs); collected
anywhere else, they are left out, since the namespace is what keeps their pods off the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sil_stages.core.contract import StorageOptions
from sil_stages.core.store import Store
from tests.containers import images
from tests.containers.images import podman
from tests.integration.arithmetic_loop import EXAMPLE, REPO
from tests.integration.controlplane import ControlPlane, FakeNodes
from tests.integration.test_helm_chart import CHART, Helm
from tests.node.node import RELEASE_NAMESPACE, TASK_IMAGE, RealNode, find_node_bin
from tests.servers.prometheus import PrometheusServer, running_prometheus
from tests.servers.seaweedfs import S3Server, running_seaweedfs

IN_NETNS = bool(os.environ.get("SIL_NETNS"))
TIMINGS: dict[str, float] = {}
"""Seconds the tier measured (node start, stages of the in-cluster loop), printed at the end of the run."""
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
    TIMINGS["control plane ready"] = plane.timings.get("ready_s", 0.0)
    try:
        started = time.monotonic()
        real.start()
        TIMINGS["node Ready (containerd, kubelet, kube-proxy)"] = time.monotonic() - started
        yield real
    finally:
        real.stop()
        plane.stop()


@pytest.fixture(scope="session")
def node_images(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator and CPU stage images, built (cached layers); the operator image imported into the node's
    containerd. The CPU stage image reaches the node inside the task image built on it (`task_image`): importing an
    8 GB image takes minutes, so only what the node runs is imported."""
    built = images.build(["operator", "stage-cpu"], tmp_path_factory.mktemp("images") / "build.log")
    node.import_from_podman(built[0])
    return dict(zip(["operator", "stage-cpu"], built, strict=True))


@pytest.fixture
def node_namespace(node: RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace that enforces the restricted Pod Security Standard, as a platform team's would."""
    name = f"node-{abs(hash(request.node.nodeid)) % 10**8}"
    node.plane.kubectl("create", "namespace", name)
    node.plane.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    node.plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def s3(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("s3"), host=node.address) as server:
        yield server


@pytest.fixture(scope="session")
def prometheus(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), host=node.address) as server:
        yield server


@pytest.fixture(scope="session")
def task_image(node: RealNode, node_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's verifier in an image of its own on top of the CPU stage image: how a team ships its task code."""
    context = tmp_path_factory.mktemp("task-image")
    (context / "arithmetic.py").write_text((EXAMPLE / "arithmetic.py").read_text())
    (context / "Containerfile").write_text(
        f"FROM {node_images['stage-cpu']}\nCOPY arithmetic.py /opt/task/arithmetic.py\nENV PYTHONPATH=/opt/task\n"
    )
    subprocess.run(
        [podman(), "build", "--pull=never", "-q", "-t", TASK_IMAGE, str(context)], check=True, capture_output=True
    )
    node.import_from_podman(TASK_IMAGE)
    return TASK_IMAGE


@pytest.fixture(scope="session")
def data_in_s3(s3: S3Server) -> dict[str, str]:
    """The base model and the task's data in S3: pods read them from the store like everything else."""
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    s3.create_bucket("models")
    s3.create_bucket("loops")
    uris = {"model": "s3://models/arithmetic-base", "prompts": "s3://models/data/train_prompts.jsonl"}
    uris["heldout"] = "s3://models/data/heldout.jsonl"
    store = Store(StorageOptions(uri=uris["model"], endpoint=s3.endpoint, region=s3.region))
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3.env().items():
            env.setenv(key, value)
        store.upload_dir(EXAMPLE / ".base-model", uris["model"])
        for name in ("prompts", "heldout"):
            source = EXAMPLE / "data" / ("train_prompts.jsonl" if name == "prompts" else "heldout.jsonl")
            store.write_bytes(uris[name], source.read_bytes())
    return uris


@pytest.fixture(scope="session")
def operator_release(
    node: RealNode, node_images: dict[str, str], task_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Helm]:
    helm = Helm(node.plane.bin_dir / "helm", tmp_path_factory.mktemp("helm"), node.plane.kubeconfig)
    operator_repository, operator_tag = node_images["operator"].rsplit(":", 1)
    stage_repository, stage_tag = task_image.rsplit(":", 1)
    helm(
        "install", "selfimprove", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace",
        "--set", f"operator.image.repository={operator_repository}",
        "--set", f"operator.image.tag={operator_tag}",
        "--set", "operator.image.pullPolicy=Never",
        "--set", f"stageImage.repository={stage_repository}",
        "--set", f"stageImage.tag={stage_tag}",
        "--wait", "--timeout", "5m",
        timeout=400,
    )  # fmt: skip
    yield helm
    helm("uninstall", "selfimprove", "-n", RELEASE_NAMESPACE, "--wait", check=False, timeout=200)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("node tier timings (s)")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"node tier: netns {os.environ.get('SIL_NETNS', '(none: tests/node left out)')}"

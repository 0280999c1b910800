"""The operator image, run as the chart runs it: `sil --help` and `sil crd` answer, and `sil operator` in a
container (host network, read-only root, the image's non-root user) reconciles a loop on the test control plane to
its first stage Job, importing only what its image installs (no torch, no training stack).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import images
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import apply, kwok_loop

pytestmark = [pytest.mark.integration, pytest.mark.containers, pytest.mark.timeout(900)]


def test_sil_help_and_sil_crd_answer_in_the_operator_image(operator_image: str) -> None:
    helped = images.run(operator_image, "--help", flags=["--entrypoint=sil", "--read-only", "--network=none"])
    assert helped.returncode == 0, helped.stderr
    assert "operator" in helped.stdout and "run" in helped.stdout
    crd = images.run(operator_image, "crd", flags=["--entrypoint=sil", "--read-only", "--network=none"])
    assert crd.returncode == 0, crd.stderr
    on_host = subprocess.run(
        [sys.executable, "-m", "sil_operator.cli", "crd"], capture_output=True, text=True, check=True
    )
    assert crd.stdout == on_host.stdout, "the image's CRD differs from this checkout's"


def test_the_operator_image_has_no_training_stack_and_a_numeric_non_root_user(operator_image: str) -> None:
    probe = (
        "import importlib.util as u, os\n"
        "print([m for m in ('torch', 'transformers', 'trl', 'tqdm', 'vllm') if u.find_spec(m)])\n"
        "print(os.getuid())\n"
    )
    done = images.run(operator_image, "-c", probe, flags=["--entrypoint=python", "--network=none", "--read-only"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "65532"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the image's user (65532) can read: pytest's own temporary folders are private to root (0700)."""
    folder = Path(tempfile.mkdtemp(prefix="sil-operator-image-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def readable_kubeconfig(plane: ControlPlane, folder: Path) -> Path:
    """The admin kubeconfig with its CA embedded, readable by the image's user, as a mounted Secret would be."""
    path = folder / "kubeconfig"
    config = json.loads(plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster["certificate-authority-data"] = base64.b64encode(Path(cluster.pop("certificate-authority")).read_bytes())
    cluster["certificate-authority-data"] = cluster["certificate-authority-data"].decode()
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


def test_sil_operator_in_its_image_reconciles_a_loop_to_its_first_stage_job(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, shared_dir: Path, operator_image: str
) -> None:
    storage = shared_dir / "store"
    storage.mkdir(mode=0o755)
    kubeconfig = readable_kubeconfig(control_plane, shared_dir)
    log = tmp_path / "operator.log"
    with running_operator(
        control_plane,
        namespace,
        log,
        image=operator_image,
        mounts=[shared_dir],
        extra_env={"KUBECONFIG": str(kubeconfig)},
    ) as operator:
        apply(control_plane, kwok_loop(namespace, "imaged", storage))

        def first_job() -> bool:
            listed = control_plane.get_json("jobs", "-n", namespace)
            return any(j["metadata"]["name"].startswith("imaged-1-acquire") for j in listed["items"])

        try:
            wait_until(first_job, 240, "the operator in its image to create the first stage Job")
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{operator.log()[-4000:]}") from None
        assert operator.process is not None and operator.process.poll() is None, operator.log()[-4000:]
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-4000:]

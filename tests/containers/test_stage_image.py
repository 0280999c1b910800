"""The CPU stage image, run as the operator runs it: every stage of one iteration in a container of the image
(`sil run --stage-image`: the config file, store folder, model and data mounted, the image's non-root user, a
read-only root filesystem, no capabilities, no network), with the same outcome as the same loop on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.containers import images
from tests.e2e.test_local_loop import EXAMPLE, REPO, SIL, small_loop

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]

STAGES = ("acquire", "select", "optimize", "evaluate")
IMAGE_USER = 65532


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The demo's base model (built once, then cached in examples/arithmetic/.base-model)."""
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    # The image's user is not the owner: what a stage reads must be readable by others (sil run checks it).
    subprocess.run(["chmod", "-R", "a+rX", str(EXAMPLE / ".base-model")], check=True)
    return EXAMPLE / ".base-model"


def run_loop(loop: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIL, "run", *extra, str(loop)], cwd=loop.parent, capture_output=True, text=True, timeout=1200, check=False
    )


def manifest(store: Path, stage: str) -> dict[str, Any]:
    return json.loads((store / "iterations" / "1" / stage / "_manifest.json").read_text())  # type: ignore[no-any-return]


def shape(value: Any) -> Any:
    """A manifest with its numbers, times and paths taken out: what must not differ between host and container."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_one_iteration_runs_every_stage_in_the_stage_image_as_it_runs_on_the_host(
    tmp_path: Path, base_model: Path, stage_image: str
) -> None:
    host_dir, container_dir = tmp_path / "host", tmp_path / "container"
    host_dir.mkdir()
    container_dir.mkdir()
    on_host = run_loop(small_loop(host_dir, base_model, iterations=1))
    assert on_host.returncode == 0, on_host.stdout + on_host.stderr

    in_containers = run_loop(small_loop(container_dir, base_model, iterations=1), "--stage-image", stage_image)
    assert in_containers.returncode == 0, in_containers.stdout + in_containers.stderr
    store = container_dir / "store"
    status = json.loads((store / "status.json").read_text())
    assert status["phase"] == "Succeeded", status
    for stage in STAGES:
        log = (store / "local" / "logs" / f"arith-small-1-{stage}.log").read_text()
        assert "podman run" in log.splitlines()[0], f"{stage} did not run in a container: {log[:300]}"
        host, container = manifest(host_dir / "store", stage), manifest(store, stage)
        assert shape(container) == shape(host), f"{stage}: the manifests differ in shape"
        assert sorted(container.get("outputs", {})) == sorted(host.get("outputs", {}))
        written = store / "iterations" / "1" / stage / "_manifest.json"
        assert written.stat().st_uid == IMAGE_USER, f"{stage} wrote its manifest as uid {written.stat().st_uid}"
    checkpoint = store / "iterations" / "1" / "optimize" / "checkpoint" / "model.safetensors"
    assert checkpoint.is_file()
    host_iteration = json.loads((host_dir / "store" / "status.json").read_text())["iterations"][0]
    assert status["iterations"][0]["decision"] in ("Promoted", "Rejected")
    assert host_iteration["decision"] in ("Promoted", "Rejected")


def test_a_bad_stage_config_is_exit_code_2_of_the_container_naming_the_field(tmp_path: Path, stage_image: str) -> None:
    config = tmp_path / "acquire.json"
    config.write_text(json.dumps({"stage": "acquire", "iteration": 1, "samplesPerPrompt": "four"}))
    done = images.run(
        stage_image,
        "acquire",
        "--config",
        f"@{config}",
        flags=["--read-only", "--network=none", f"--volume={tmp_path}:{tmp_path}:ro"],
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "config" in (done.stdout + done.stderr).lower()


def test_the_stage_image_runs_as_its_numeric_non_root_user_and_works_with_a_read_only_root(stage_image: str) -> None:
    probe = (
        "import os, sil_stages.acquire.stage\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    open('/opt/venv/x', 'w')\n"
        "except OSError as error:\n"
        "    print('read-only', error.errno)\n"
    )
    done = images.run(
        stage_image, "-c", probe, flags=["--read-only", "--network=none", "--tmpfs=/tmp", "--entrypoint=python"]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(IMAGE_USER), str(IMAGE_USER), "read-only", "30"]


def test_the_stage_image_has_no_operator_packages_build_tools_or_caches(stage_image: str) -> None:
    probe = (
        "import importlib.util as u, os, shutil\n"
        "print([m for m in ('kopf', 'kubernetes', 'celpy') if u.find_spec(m)])\n"
        "print([t for t in ('gcc', 'cc', 'make', 'g++') if shutil.which(t)])\n"
        "caches = ['/root/.cache/pip', '/home/nonroot/.cache/pip', '/var/lib/apt/lists']\n"
        "print([c for c in caches if os.path.isdir(c) and os.listdir(c)])\n"
        "print(sorted(os.listdir('/tmp')))\n"
    )
    done = images.run(stage_image, "-c", probe, flags=["--network=none", "--entrypoint=python", "--user=0"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["[]", "[]", "[]", "[]"], done.stdout

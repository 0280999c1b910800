"""The pod runner's stand-in for emptyDir mounts: env paths into a mount point at the pod's folder for it."""

from __future__ import annotations

from pathlib import Path

from tests.podrunner.runner import local_mounts


def pod_with_mounts() -> tuple[dict[str, object], dict[str, object]]:
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "scratch", "mountPath": "/scratch"}]
    container = {"name": "stage", "volumeMounts": mounts}
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"volumes": volumes}}, container


def test_env_paths_into_an_emptydir_point_at_the_pods_folder(tmp_path: Path) -> None:
    pod, container = pod_with_mounts()
    env = local_mounts(pod, container, tmp_path, {"HOME": "/scratch", "HF_HOME": "/scratch/.cache/hf", "X": "1"})
    assert env == {
        "HOME": str(tmp_path / "volumes" / "scratch"),
        "HF_HOME": str(tmp_path / "volumes" / "scratch" / ".cache" / "hf"),
        "X": "1",
    }
    assert (tmp_path / "volumes" / "tmp").is_dir()


def test_a_path_that_exists_on_this_machine_is_left_alone_even_under_a_mount_point(tmp_path: Path) -> None:
    checkout = Path("/tmp") / tmp_path.name
    checkout.mkdir(exist_ok=True)
    try:
        pod, container = pod_with_mounts()
        env = local_mounts(pod, container, tmp_path, {"PYTHONPATH": str(checkout)})
        assert env == {"PYTHONPATH": str(checkout)}, "a checkout under /tmp stays importable"
    finally:
        checkout.rmdir()

"""`sil run --stage-image`: the engine command line that runs a stage as its Job would (no engine is started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_operator.failures import StageInputUnreadable
from sil_operator.local.containers import StageContainers, covering_mounts, referenced_paths, ulimit_flags


def write_config(path: Path, config: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "runs" / "loop"
    model = tmp_path / "models" / "base"
    data = tmp_path / "data"
    loop_dir = tmp_path / "loop"
    for folder in (store, model, data, loop_dir):
        folder.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"x")
    (data / "prompts.jsonl").write_text("{}\n")
    config = write_config(
        store / "local" / "configs" / "loop-1-acquire.json",
        {
            "model_uri": model.as_uri(),
            "prompts": {"uri": str(data / "prompts.jsonl")},
            "output_uri": (store / "iterations" / "1" / "acquire").as_uri(),
            "note": "/not/a/path/here",
        },
    )
    return {"store": store, "model": model, "data": data, "loop_dir": loop_dir, "config": config}


def containers(layout: dict[str, Path], uid: int = 0, **env: str) -> StageContainers:
    return StageContainers(
        image="localhost/selfimprove/stage-cpu:dev",
        store_dir=layout["store"],
        python_path=[layout["loop_dir"]],
        env=env,
        uid=uid,
        gid=uid,
    )


def test_the_stage_runs_as_its_job_does_read_only_root_no_capabilities_scratch_and_tmp(
    layout: dict[str, Path],
) -> None:
    command = containers(layout).command("acquire", layout["config"], "loop-1-acquire", 1)
    assert command[:3] == ["podman", "run", "--rm"]
    for flag in ("--read-only", "--cap-drop=all", "--security-opt=no-new-privileges", "--pull=never"):
        assert flag in command
    assert "--tmpfs=/tmp:rw,mode=1777" in command and "--tmpfs=/scratch:rw,mode=1777" in command
    assert "--env=HOME=/scratch" in command and "--env=TMPDIR=/tmp" in command
    assert "--network=none" in command, "a file:// loop's stages need no network"
    image_at = command.index("localhost/selfimprove/stage-cpu:dev")
    assert command[image_at + 1 :] == ["acquire", "--config", f"@{layout['config'].resolve()}"]
    assert not any(flag.startswith("--user") for flag in command), "as root, the image's own (non-root) user"


def test_only_the_store_is_writable_and_every_named_local_file_is_mounted_read_only_at_its_own_path(
    layout: dict[str, Path],
) -> None:
    command = containers(layout).command("acquire", layout["config"], "loop-1-acquire", 1)
    volumes = [flag.removeprefix("--volume=") for flag in command if flag.startswith("--volume=")]
    store = layout["store"].resolve()
    assert f"{store}:{store}:rw,U" in volumes
    for folder in (layout["model"], layout["data"], layout["loop_dir"]):
        assert f"{folder.resolve()}:{folder.resolve()}:ro" in volumes
    assert len(volumes) == 4, volumes


def test_a_url_in_the_config_gives_the_stage_the_host_network(layout: dict[str, Path]) -> None:
    config = json.loads(layout["config"].read_text())
    config["pushgateway"] = "http://127.0.0.1:9091"
    layout["config"].write_text(json.dumps(config))
    assert "--network=host" in containers(layout).command("evaluate", layout["config"], "loop-1-evaluate", 1)


def test_the_loops_runtime_env_wins_and_a_non_root_caller_keeps_its_own_uid(layout: dict[str, Path]) -> None:
    command = containers(layout, uid=1000, HOME="/scratch/home", OMP_NUM_THREADS="4").command(
        "select", layout["config"], "loop-1-select", 2
    )
    assert "--env=HOME=/scratch/home" in command and "--env=HOME=/scratch" not in command
    assert "--env=OMP_NUM_THREADS=4" in command
    assert "--userns=keep-id" in command and "--user=1000:1000" in command
    store = layout["store"].resolve()
    assert f"--volume={store}:{store}:rw" in command, "no :U chown when the caller is not root"


def test_a_file_the_images_user_cannot_read_is_refused_before_the_stage_starts_naming_it_and_the_fix(
    layout: dict[str, Path],
) -> None:
    weights = layout["model"] / "model.safetensors"
    weights.chmod(0o600)
    with pytest.raises(StageInputUnreadable, match=r"model\.safetensors \(mode 0600\).*chmod -R a\+rX"):
        containers(layout).command("acquire", layout["config"], "loop-1-acquire", 1)


def test_referenced_paths_are_file_uris_and_absolute_paths_that_exist(layout: dict[str, Path]) -> None:
    found = set(referenced_paths(json.loads(layout["config"].read_text())))
    assert layout["model"] in found and layout["data"] / "prompts.jsonl" in found
    assert Path("/not/a/path/here") not in found


def test_covering_mounts_keeps_the_outermost_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "b" / "f").write_text("")
    assert covering_mounts([tmp_path / "a" / "b" / "f", tmp_path / "a", tmp_path / "c"]) == [
        (tmp_path / "a").resolve(),
        (tmp_path / "c").resolve(),
    ]


def test_the_rlimits_never_exceed_this_process_hard_limits() -> None:
    import resource

    flags = ulimit_flags()
    values = dict(f.split("=", 1) for f in flags[1::2])
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _, hard = values[name].partition(":")
        limit = resource.getrlimit(which)[1]
        assert soft == hard and (limit == resource.RLIM_INFINITY or int(hard) <= limit)


def test_the_store_is_not_checked_even_inside_the_loop_folder(tmp_path: Path) -> None:
    """The store is handed to the image's user (`:U`): its files' modes do not matter, wherever it lies."""
    loop_dir = tmp_path / "loop"
    store = loop_dir / "store"
    config = write_config(store / "local" / "configs" / "c.json", {"in": str(store / "private.jsonl")})
    (store / "private.jsonl").write_text("{}")
    (store / "private.jsonl").chmod(0o600)
    command = StageContainers("img", store, [loop_dir], uid=0, gid=0).command("select", config, "c", 1)
    assert f"--volume={loop_dir.resolve()}:{loop_dir.resolve()}:ro" in command

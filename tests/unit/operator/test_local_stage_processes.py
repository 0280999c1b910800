"""What `sil run` keeps from running every stage in a process of its own, with stages forked from its fork server.

Each test runs the CLI as a user does, on a loop whose acquire stage calls a prompt generator next to the loop
file (user code, called before any model is loaded). The generator records what its process looks like, then
exits, crashes or sleeps, as the test asks, or returns a record without a prompt (the stage exits 2 at once).
The fork server imports only `sil_stages.cli` here (`SIL_FORK_SERVER_PRELOAD`) so a test takes seconds; one test
preloads torch to check its threads after the fork.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.local.executor import fork_server_enabled
from sil_operator.local.forkclient import ForkServer
from sil_stages.forkserver import PRELOAD, cuda_driver_loaded, preload_entries

pytestmark = pytest.mark.timeout(120)

SIL = [sys.executable, "-m", "sil_operator.cli"]

STAGE_CODE = """
import ctypes, json, os, time
from pathlib import Path

BEHAVIOUR = {behaviour!r}


def prompts(iteration, seed, count):
    info = {{
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "cmdline": Path("/proc/self/cmdline").read_bytes().decode().split("\\0"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }}
    if BEHAVIOUR == "torch":
        import torch

        info["product"] = float((torch.ones(64, 64) @ torch.ones(64, 64)).sum())
        info["threads"] = torch.get_num_threads()
        info["cuda_initialized"] = torch.cuda.is_initialized()
    Path(__file__).with_name("stage.json").write_text(json.dumps(info))
    if BEHAVIOUR == "exit3":
        os._exit(3)
    if BEHAVIOUR == "segfault":
        ctypes.string_at(0)
    if BEHAVIOUR == "sleep":
        time.sleep(120)
    return [{{"text": "no prompt field: the stage exits 2 here, before loading any model"}}]
"""


def write_loop(tmp_path: Path, behaviour: str, env: dict[str, str] | None = None) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "heldout.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    (tmp_path / "stagecode.py").write_text(STAGE_CODE.format(behaviour=behaviour))
    runtime: dict[str, Any] = {"backoffLimit": 0}
    if env:
        runtime["env"] = env
    loop = {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": "stage-processes"},
        "spec": {
            "model": {"uri": "./model"},
            "storage": {"uri": "./store"},
            "maxIterations": 1,
            "runtime": runtime,
            "acquire": {"prompts": {"generator": "stagecode:prompts", "perIteration": 1}},
            "evaluate": {"datasets": [{"name": "heldout", "uri": "./heldout.jsonl"}]},
        },
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(loop))
    return path


def sil_env(fork_server: str | None = None, preload: str = "sil_stages.cli") -> dict[str, str]:
    env = {**os.environ, "SIL_FORK_SERVER_PRELOAD": preload}
    env.pop("SIL_FORK_SERVER", None)
    if fork_server is not None:
        env["SIL_FORK_SERVER"] = fork_server
    return env


def run_loop(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIL, "run", "loop.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def acquire_status(tmp_path: Path) -> dict[str, Any]:
    status = json.loads((tmp_path / "store" / "status.json").read_text())
    acquire: dict[str, Any] = status["iterations"][0]["stages"][0]
    return acquire


def stage_info(tmp_path: Path, timeout: float = 60.0) -> dict[str, Any]:
    path = tmp_path / "stage.json"
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the stage never reached the prompt generator"
        time.sleep(0.1)
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_of(folder: Path) -> list[int]:
    """Processes whose command line names the folder: the fork server (its run dir) and every stage it forked."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline and alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def gone(pids: list[int], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [pytest.param("exit3", 3, id="os._exit(3)"), pytest.param("segfault", -signal.SIGSEGV, id="segfault")],
)
def test_a_stage_that_crashes_fails_its_stage_and_sil_run_reports_it(tmp_path: Path, behaviour: str, code: int) -> None:
    write_loop(tmp_path, behaviour)
    done = run_loop(tmp_path, sil_env())
    assert done.returncode == 1, done.stdout + done.stderr
    acquire = acquire_status(tmp_path)
    assert (acquire["phase"], acquire["reason"], acquire["attempts"]) == ("Failed", "Error", 1)
    assert acquire["message"].startswith(f"exit code {code}: "), acquire["message"]
    assert (tmp_path / "store" / "local" / "logs" / "forkserver.log").exists(), "the stage ran in the fork server"
    assert processes_of(tmp_path) == [], "nothing of the run is left"


def test_a_stage_killed_with_sigkill_is_a_failed_stage_and_the_runner_goes_on(tmp_path: Path) -> None:
    write_loop(tmp_path, "sleep")
    runner = subprocess.Popen(
        [*SIL, "run", "loop.yaml"], cwd=tmp_path, env=sil_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        stage = stage_info(tmp_path)
        os.kill(stage["pid"], signal.SIGKILL)
        output, _ = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 1, output
    acquire = acquire_status(tmp_path)
    assert (acquire["phase"], acquire["reason"]) == ("Failed", "Error")
    assert acquire["message"].startswith(f"exit code {-signal.SIGKILL}: "), acquire["message"]


def test_ctrl_c_of_sil_run_stops_the_running_stage_and_the_fork_server(tmp_path: Path) -> None:
    write_loop(tmp_path, "sleep")
    runner = subprocess.Popen(
        [*SIL, "run", "loop.yaml"],
        cwd=tmp_path,
        env=sil_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a shell gives a foreground command
    )
    try:
        stage = stage_info(tmp_path)
        assert stage["sid"] == stage["pid"], "the stage has its own session: Ctrl-C reaches only the runner"
        left = processes_of(tmp_path)
        assert stage["pid"] in left and len(left) == 2, "the stage and its fork server"
        os.killpg(runner.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert runner.wait(timeout=30) == 130
    finally:
        runner.kill()
    assert gone(left), f"still running after Ctrl-C: {[pid for pid in left if alive(pid)]}"


def test_sigterm_of_sil_run_stops_the_running_stage_and_the_fork_server_as_ctrl_c_does(tmp_path: Path) -> None:
    write_loop(tmp_path, "sleep")
    runner = subprocess.Popen(
        [*SIL, "run", "loop.yaml"], cwd=tmp_path, env=sil_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        stage_info(tmp_path)
        left = processes_of(tmp_path)
        assert len(left) == 2, "the stage and its fork server"
        runner.send_signal(signal.SIGTERM)  # `kill`, a supervisor, a CI timeout
        assert runner.wait(timeout=30) == 128 + signal.SIGTERM
        assert runner.stdout is not None
        assert "terminated" in runner.stdout.read().decode()
    finally:
        runner.kill()
    assert gone(left), f"still running after SIGTERM: {[pid for pid in left if alive(pid)]}"
    status = json.loads((tmp_path / "store" / "status.json").read_text())
    assert status["phase"] != "Failed", "a stop is not a failure: the same command continues"


def test_kill_9_of_sil_run_leaves_neither_stage_nor_fork_server(tmp_path: Path) -> None:
    write_loop(tmp_path, "sleep")
    runner = subprocess.Popen(
        [*SIL, "run", "loop.yaml"], cwd=tmp_path, env=sil_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        stage = stage_info(tmp_path)
        left = processes_of(tmp_path)
        assert stage["pid"] in left and len(left) == 2, "the stage and its fork server"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    assert gone(left), f"orphans after kill -9 of sil run: {[pid for pid in left if alive(pid)]}"


def test_stages_are_forked_from_the_fork_server_by_default(tmp_path: Path) -> None:
    write_loop(tmp_path, "record")
    done = run_loop(tmp_path, sil_env())
    assert done.returncode == 1, done.stdout + done.stderr
    acquire = acquire_status(tmp_path)
    assert (acquire["reason"], acquire["attempts"]) == ("InputRejected", 1), "exit code 2 passes through the fork"
    assert "exit code 2: " in acquire["message"] and "not a dict with a string `prompt`" in acquire["message"], acquire[
        "message"
    ]
    stage = stage_info(tmp_path)
    server_log = (tmp_path / "store" / "local" / "logs" / "forkserver.log").read_text()
    assert f"forkserver {stage['ppid']}: ready" in server_log, "the stage's parent is the fork server"
    assert "sil_stages.forkserver" in stage["cmdline"]


def test_sil_fork_server_0_starts_each_stage_as_a_fresh_python(tmp_path: Path) -> None:
    write_loop(tmp_path, "record")
    run_loop(tmp_path, sil_env(fork_server="0"))
    stage = stage_info(tmp_path)
    assert stage["cmdline"][1:3] == ["-m", "sil_stages"], stage["cmdline"]
    assert stage["sid"] == stage["pid"]
    assert not (tmp_path / "store" / "local" / "logs" / "forkserver.log").exists()


def test_a_forked_stage_computes_with_torch_on_the_threads_its_environment_sets(tmp_path: Path) -> None:
    """torch is imported in the server with the stage environment; the first computation is the child's."""
    write_loop(tmp_path, "torch", env={"OMP_NUM_THREADS": "2"})
    run_loop(tmp_path, sil_env(preload="sil_stages.cli,torch"))
    stage = stage_info(tmp_path)
    assert "sil_stages.forkserver" in stage["cmdline"]
    assert "preload torch:" in (tmp_path / "store" / "local" / "logs" / "forkserver.log").read_text()
    assert (stage["omp"], stage["threads"], stage["product"]) == ("2", 2, 64.0**3)
    assert stage["cuda_initialized"] is False


def test_the_fork_server_preloads_the_stage_libraries_unless_told_otherwise() -> None:
    modules = [module for module, _ in preload_entries({})]
    assert modules[0] == "sil_stages.cli"
    assert {"torch", "transformers", "trl"} <= set(modules)
    assert preload_entries({}) == list(PRELOAD)
    assert preload_entries({"SIL_FORK_SERVER_PRELOAD": "sil_stages.cli, mymodule,"}) == [
        ("sil_stages.cli", ()),
        ("mymodule", ()),
    ]


@pytest.mark.parametrize(
    ("maps", "loaded"),
    [
        pytest.param("7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15\n", True, id="driver"),
        pytest.param("7f00-7f10 r-xp 0 08:01 1 /usr/lib/libcuda.so.1\n", True, id="driver link"),
        pytest.param("7f00-7f10 r-xp 0 08:01 1 /venv/nvidia/cuda_runtime/lib/libcudart.so.12\n", False, id="runtime"),
        pytest.param("", False, id="nothing"),
    ],
)
def test_forking_is_unsafe_once_the_cuda_driver_is_loaded(maps: str, loaded: bool) -> None:
    assert cuda_driver_loaded(maps) is loaded


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("1", True), ("", True), ("0", False), ("false", False), ("Off", False), ("no", False)],
)
def test_sil_fork_server_opts_out_with_0_false_no_or_off(value: str | None, enabled: bool) -> None:
    assert fork_server_enabled({} if value is None else {"SIL_FORK_SERVER": value}) is enabled


def test_a_stage_whose_fork_server_died_failed_and_its_log_says_why(tmp_path: Path) -> None:
    env = {**os.environ, "SIL_FORK_SERVER_PRELOAD": "sil_stages.cli"}
    server = ForkServer(tmp_path, env, tmp_path / "forkserver.log", None)
    stage = server.start(["select", "--config", "{}"], tmp_path / "stage.log")
    server.process.kill()
    assert stage.wait(timeout=30) == -signal.SIGKILL
    assert "the fork server of this run ended" in (tmp_path / "stage.log").read_text()
    assert not server.alive
    server.close()


def test_a_stage_run_in_the_fork_server_exits_with_its_own_code_and_writes_its_log(tmp_path: Path) -> None:
    env = {**os.environ, "SIL_FORK_SERVER_PRELOAD": "sil_stages.cli"}
    server = ForkServer(tmp_path, env, tmp_path / "forkserver.log", None)
    try:
        stage = server.start(["select", "--config", "{}"], tmp_path / "stage.log")
        assert stage.wait(timeout=60) == 2
        assert stage.pid is not None and not alive(stage.pid)
        assert "config field `loop`: Field required" in (tmp_path / "stage.log").read_text()
    finally:
        server.close()
    assert server.process.returncode == 0 and not server.alive

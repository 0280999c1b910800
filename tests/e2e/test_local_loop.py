"""`sil run` end to end on the tiny arithmetic model: real stage processes, real training, real gates.

These run the CLI as a user does (a subprocess), on a small version of the demo loop, so they also cover the
stage programs' command line, the store layout, the status file, the report and restarts after `kill -9`.
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

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "arithmetic"
SIL = [sys.executable, "-m", "sil_operator.cli"]

HELDOUT_SCORE = 'selfimprove_eval_score{iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The demo's base model (built once, then cached in examples/arithmetic/.base-model)."""
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    return EXAMPLE / ".base-model"


def small_loop(
    tmp_path: Path, base_model: Path, iterations: int = 2, optimize_epochs: int = 2, optimize_batch_size: int = 32
) -> Path:
    """The demo loop, shrunk: fewer prompts and samples, so an iteration takes seconds of compute."""
    document: dict[str, Any] = {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": "arith-small"},
        "spec": {
            "model": {"uri": str(base_model)},
            "storage": {"uri": "./store"},
            "maxIterations": iterations,
            "runtime": {"backoffLimit": 0},
            "acquire": {
                "prompts": {"uri": str(EXAMPLE / "data" / "train_prompts.jsonl"), "perIteration": 96},
                "samplesPerPrompt": 4,
                "sampling": {"temperature": 1.0, "maxNewTokens": 5},
                "batchSize": 96,
            },
            "select": {
                "scorer": {"type": "verifier", "verifier": "arithmetic:verify"},
                "keep": {"minScore": 1.0, "topK": 2},
            },
            "optimize": {
                "hyperparameters": {
                    "learningRate": 1.0e-3,
                    "epochs": optimize_epochs,
                    "batchSize": optimize_batch_size,
                    "maxLength": 16,
                }
            },
            "evaluate": {
                "datasets": [{"name": "heldout", "uri": str(EXAMPLE / "data" / "heldout.jsonl")}],
                "refinement": {"method": "self-consistency", "samples": 4},
                "maxNewTokens": 5,
            },
            "promotion": {
                "gates": [
                    {
                        "name": "heldout-improves",
                        "query": HELDOUT_SCORE,
                        "successCondition": "result > champion",
                    }
                ]
            },
        },
    }
    # The verifier module lives next to the loop file: `sil run` puts that folder on the stages' PYTHONPATH.
    (tmp_path / "arithmetic.py").write_text((EXAMPLE / "arithmetic.py").read_text())
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def launches(store: Path) -> list[tuple[int, str]]:
    journal = store / "local" / "launches.jsonl"
    if not journal.exists():
        return []
    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return [(e["iteration"], e["stage"]) for e in entries]


def test_a_two_iteration_loop_runs_end_to_end(tmp_path: Path, base_model: Path) -> None:
    loop = small_loop(tmp_path, base_model)
    done = subprocess.run([*SIL, "run", str(loop)], cwd=tmp_path, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout + done.stderr
    store = tmp_path / "store"
    status = json.loads((store / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert [it["index"] for it in status["iterations"]] == [1, 2]
    assert all(it["decision"] in ("Promoted", "Rejected") for it in status["iterations"])
    for iteration in (1, 2):
        for stage in ("acquire", "select", "optimize", "evaluate"):
            assert (store / "iterations" / str(iteration) / stage / "_manifest.json").is_file()
    assert (store / "iterations" / "1" / "optimize" / "checkpoint" / "model.safetensors").is_file()
    promoted = [it["index"] for it in status["iterations"] if it["decision"] == "Promoted"]
    champion_file = store / "champion.json"
    assert champion_file.exists() == bool(promoted), "champion.json is written only by a promotion"
    if promoted:
        assert json.loads(champion_file.read_text())["iteration"] == promoted[-1]
    for it in status["iterations"]:
        if it["decision"] == "Promoted":
            assert it["candidateScore"] > it["championScore"], "a promoted candidate beats the champion it replaced"
    report = json.loads((store / "report.json").read_text())
    assert [row["iteration"] for row in report["iterations"]] == [1, 2]
    assert (store / "scores.png").stat().st_size > 1000
    assert "Iterations" in done.stdout, "the run ends with the iteration table"
    assert launches(store) == [(i, s) for i in (1, 2) for s in ("acquire", "select", "optimize", "evaluate")]

    again = subprocess.run([*SIL, "run", str(loop)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(launches(store)) == 8, "running a finished loop again starts nothing"


def _stage_processes(config_fragment: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sil_stages" in cmdline and config_fragment in cmdline:
                found.append(int(proc.name))
    return found


def test_kill_9_during_optimize_then_the_same_command_finishes_without_redoing_earlier_stages(
    tmp_path: Path, base_model: Path
) -> None:
    # Forked from the pre-imported fork server, a 2-epoch optimize (4 steps) ends within a second of its launch; 100
    # epochs of batches of 8 (about 700 steps, 10 s here) keep it training well past the moment it is killed.
    loop = small_loop(tmp_path, base_model, optimize_epochs=100, optimize_batch_size=8)
    store = tmp_path / "store"
    runner = subprocess.Popen(
        [*SIL, "run", str(loop)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while (1, "optimize") not in launches(store):
        assert runner.poll() is None, "sil run ended before reaching optimize"
        assert time.monotonic() < deadline, "optimize never started"
        time.sleep(0.2)
    time.sleep(1.5)  # inside optimize: the model loaded, training under way or about to be
    assert not (store / "iterations" / "1" / "optimize" / "_manifest.json").exists()
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    stage_gone = time.monotonic() + 10
    while _stage_processes(str(store)) and time.monotonic() < stage_gone:
        time.sleep(0.2)
    assert _stage_processes(str(store)) == [], "the stage process dies with the runner"

    done = subprocess.run([*SIL, "run", str(loop)], cwd=tmp_path, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads((store / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert [it["index"] for it in status["iterations"]] == [1, 2]
    started = launches(store)
    assert started.count((1, "optimize")) == 2, "the killed stage is run again"
    others = [entry for entry in started if entry != (1, "optimize")]
    assert len(others) == len(set(others)) == 7, f"no other stage ran twice: {started}"
    assert (store / "iterations" / "1" / "optimize" / "_manifest.json").is_file()


def test_one_iteration_with_two_training_processes_per_node(tmp_path: Path, base_model: Path) -> None:
    """`sil run` starts optimize with the same command; the stage relaunches itself as two gloo processes."""
    loop = small_loop(tmp_path, base_model, iterations=1)
    document = yaml.safe_load(loop.read_text())
    document["spec"]["optimize"]["distributed"] = {"processesPerNode": 2}
    loop.write_text(yaml.safe_dump(document, sort_keys=False))
    done = subprocess.run([*SIL, "run", str(loop)], cwd=tmp_path, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout + done.stderr
    optimize = tmp_path / "store" / "iterations" / "1" / "optimize"
    assert json.loads((optimize / "_manifest.json").read_text())["metrics"]["world_size"] == 2
    assert (optimize / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "store" / "status.json").read_text())["phase"] == "Succeeded"

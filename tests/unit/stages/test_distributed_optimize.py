"""optimize as several processes (`optimize.distributed`) and with trainer checkpoints (`checkpointEverySteps`).

Real processes: `python -m sil_stages optimize` re-executes itself under `accelerate launch`, whose ranks train in
a gloo group on the CPU; nothing of torch.distributed is mocked. A SIGTERM is a real signal.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl

pytestmark = pytest.mark.slow

PAIRS = [(1, 2), (3, 4), (5, 6)]


def _stage(config: dict[str, Any], *, script: str | None = None, timeout: float = 240) -> tuple[int, str, float]:
    """Runs the optimize stage as a process; its exit code, its stderr and its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    prefix = ["-c", script] if script else ["-m", "sil_stages"]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *prefix, "optimize", "--config", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def _manifest(config: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((output_dir(config) / "_manifest.json").read_text())
    return manifest


def _sft_config(tmp_path: Path, stage_config: StageConfig, tiny_model: Path, **fields: Any) -> dict[str, Any]:
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in PAIRS * 4]
    )
    return stage_config(
        "optimize",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        hyperparameters={"learning_rate": 1e-2, "epochs": 2, "batch_size": 4, "max_length": 16},
        **fields,
    )


def test_sft_with_two_processes_per_node_trains_in_a_group_of_two_and_rank_0_alone_writes(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    alone = _sft_config(tmp_path / "one", stage_config, tiny_model, output_uri=(tmp_path / "one-out").as_uri())
    two = _sft_config(tmp_path / "two", stage_config, tiny_model, distributed={"processesPerNode": 2})
    code_one, _, seconds_one = _stage(alone)
    code, stderr, seconds_two = _stage(two)
    print(f"tiny SFT wall time: 1 process {seconds_one:.1f}s, 2 processes {seconds_two:.1f}s")
    assert code_one == 0
    assert code == 0, stderr
    assert "launching 2 training processes" in stderr
    metrics = _manifest(two)["metrics"]
    assert metrics["world_size"] == 2
    assert _manifest(alone)["metrics"]["world_size"] == 1
    # 12 examples, 4 per process: 2 steps per epoch with two processes (3 with one), 2 epochs
    assert metrics["steps"] == 4
    assert _manifest(alone)["metrics"]["steps"] == 6
    assert metrics["param_delta_l2"] > 0
    assert (output_dir(two) / "checkpoint" / "model.safetensors").exists()
    assert stderr.count("done; global rank 0 writes the manifest") == 1
    assert sorted(p.name for p in output_dir(two).iterdir()) == ["_manifest.json", "checkpoint"]
    assert "resumed_from_step" not in metrics  # no checkpointEverySteps: no trainer checkpoints


def test_dpo_with_two_processes_trains_and_writes_one_manifest(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)} for a, b in PAIRS * 2],
    )
    config = stage_config(
        "optimize",
        method="dpo",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        hyperparameters={"learning_rate": 1e-2, "epochs": 1, "batch_size": 3, "max_length": 16},
        distributed={"processesPerNode": 2},
    )
    code, stderr, _ = _stage(config)
    assert code == 0, stderr
    metrics = _manifest(config)["metrics"]
    assert metrics["world_size"] == 2
    assert metrics["steps"] == 1  # 6 pairs, 3 per process
    assert metrics["param_delta_l2"] > 0
    assert (output_dir(config) / "checkpoint" / "model.safetensors").exists()


def test_grpo_with_two_processes_rolls_out_and_trains_in_a_group_of_two(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    rows = [
        {"prompt": f"{a}+{b}=", "record": json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)})}
        for a, b in PAIRS * 2
    ]
    config = stage_config(
        "optimize",
        method="grpo",
        train_uri=write_jsonl(tmp_path / "train.jsonl", rows).as_uri(),
        init_model_uri=tiny_model.as_uri(),
        grpo={"num_generations": 2, "max_completion_length": 4},
        hyperparameters={"learning_rate": 1e-3, "batch_size": 2, "max_steps": 2, "max_length": 16},
        distributed={"processesPerNode": 2},
    )
    code, stderr, _ = _stage(config)
    assert code == 0, stderr
    metrics = _manifest(config)["metrics"]
    assert (metrics["world_size"], metrics["steps"]) == (2, 2)
    assert "train/reward" in metrics  # the rollouts were scored (the random tiny model earns 0)
    assert (output_dir(config) / "checkpoint" / "model.safetensors").exists()


def test_a_bad_input_in_the_ranks_exits_2_through_the_launcher(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("")
    config = stage_config(
        "optimize",
        method="dpo",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        distributed={"processesPerNode": 2},
    )
    code, stderr, _ = _stage(config)
    assert code == 2, stderr
    assert "launching 2 training processes" in stderr
    assert "select produced no preference pair" in stderr
    assert not (output_dir(config) / "_manifest.json").exists()


def test_deepspeed_on_cpu_fails_with_exit_2_naming_the_field(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _sft_config(tmp_path, stage_config, tiny_model, distributed={"deepspeed": "zero3"})
    code, stderr, _ = _stage(config)
    assert code == 2
    assert "optimize.distributed.deepspeed" in stderr
    assert "launching" not in stderr


STOP_AT_STEP_4 = """
import os, signal, sys
from transformers import TrainerCallback
from sil_stages.optimize.methods import sft, training

class SigtermDuringStep4(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, as a pod deletion sends

def finish(job, trainer, *args):
    trainer.add_callback(SigtermDuringStep4())
    return training.finish(job, trainer, *args)

sft.finish = finish
from sil_stages.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_saves_a_trainer_checkpoint_and_the_retry_resumes_from_its_step(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _sft_config(tmp_path, stage_config, tiny_model, checkpoint_every_steps=2)
    config["hyperparameters"]["max_steps"] = 6
    code, stderr, _ = _stage(config, script=STOP_AT_STEP_4)
    assert code == 143, stderr
    assert "stopping at step 4 on SIGTERM" in stderr
    remote = output_dir(config) / "trainer-checkpoints"
    assert json.loads((remote / "latest.json").read_text())["step"] == 4
    assert (remote / "checkpoint-4" / "trainer_state.json").exists()
    assert not [p for p in (remote / "checkpoint-2").rglob("*") if p.is_file()]  # the store keeps the latest only
    assert not (output_dir(config) / "_manifest.json").exists()

    code, stderr, _ = _stage(config)
    assert code == 0, stderr
    assert "resuming from trainer checkpoint checkpoint-4 (step 4)" in stderr
    manifest = _manifest(config)
    assert manifest["metrics"]["resumed_from_step"] == 4
    assert manifest["metrics"]["steps"] == 6
    assert (output_dir(config) / "checkpoint" / "model.safetensors").exists()
    assert not any(entry["path"].startswith("trainer-checkpoints/") for entry in manifest["files"])


def test_sigterm_to_the_launching_process_stops_every_rank_at_one_step_after_saving(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """A pod's SIGTERM reaches the launching process: it forwards it, both ranks agree on the step, save, exit 143."""
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(10)],
    )
    config = stage_config(
        "optimize",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        hyperparameters={"learning_rate": 1e-3, "epochs": 50, "batch_size": 4, "max_length": 16},
        distributed={"processesPerNode": 2},
        checkpoint_every_steps=5,
    )
    log_file = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log_file.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sil_stages", "optimize", "--config", json.dumps(config)], stderr=stderr, env=env
        )
        deadline = time.monotonic() + 180
        while "uploaded trainer checkpoint checkpoint-5" not in log_file.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    text = log_file.read_text()
    assert code == 143, text
    stops = re.findall(r"stopping at step (\d+) on SIGTERM", text)
    assert len(stops) == 2 and stops[0] == stops[1], stops  # one line per rank, the same step
    latest = json.loads((output_dir(config) / "trainer-checkpoints" / "latest.json").read_text())
    assert latest["step"] == int(stops[0])
    assert not (output_dir(config) / "_manifest.json").exists()

"""Every registered optimization method trains the tiny model through the optimize stage, with and without LoRA.

`TRAINING_DATA` holds, per method, a `train.jsonl` in the shape that method consumes; the registry test
(tests/unit/operator/test_method_registry.py) fails when a registered method has no row here, so no method can
be added without a test that trains with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from sil_stages.core.errors import EXIT_INPUT_REJECTED
from sil_stages.optimize.methods import REGISTRY
from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl

pytestmark = pytest.mark.slow

SUMS = [(1, 2), (3, 4), (5, 6), (2, 2)]
VERIFIER = {"type": "verifier", "verifier": "exact-match"}

TRAINING_DATA: dict[str, list[dict[str, Any]]] = {
    "sft": [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in SUMS] * 2,
    "dpo": [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)} for a, b in SUMS] * 2,
    "grpo": [{"prompt": f"{a}+{b}=", "record": json.dumps({"answer": str(a + b)})} for a, b in SUMS],
}
"""One small training set per method, in its data shape."""

SETTINGS: dict[str, dict[str, Any]] = {
    "grpo": {"num_generations": 4, "max_completion_length": 3},
}
"""Method settings that keep the test small (GRPO: few, short rollouts)."""

MAJORITY_VOTE = {"type": "majority-vote"}
SCORERS: dict[str, dict[str, Any]] = {"grpo": MAJORITY_VOTE}
"""GRPO learns only from rewards that differ within a group: the random tiny model never adds correctly (every
verifier reward 0), but its samples do disagree, so the majority vote rewards some and not others."""


def _run(config: dict[str, Any]) -> int:
    return main(["optimize", "--config", json.dumps(config)])


def _manifest(config: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((output_dir(config) / "_manifest.json").read_text())
    return manifest


def _config(
    tmp_path: Path,
    stage_config: StageConfig,
    tiny_model: Path,
    method: str,
    scorer: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    train = write_jsonl(tmp_path / "train.jsonl", TRAINING_DATA[method])
    block = {method: SETTINGS[method]} if method in SETTINGS else {}
    return stage_config(
        "optimize",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        method=method,
        scorer=scorer or SCORERS.get(method, VERIFIER),
        hyperparameters={"learning_rate": 1e-2, "max_steps": 2, "batch_size": 4, "max_length": 16},
        **block,
        **fields,
    )


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_trains_the_model_and_logs_its_trainer_metrics(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, method: str
) -> None:
    config = _config(tmp_path, stage_config, tiny_model, method)
    assert _run(config) == 0
    metrics = _manifest(config)["metrics"]
    assert metrics["steps"] == 2
    assert metrics["param_delta_l2"] > 0, "training moved the weights"
    assert any(key.startswith("train/") for key in metrics), "the trainer's own metrics are in the manifest"
    assert (output_dir(config) / "checkpoint" / "model.safetensors").is_file()
    assert not (output_dir(config) / "adapter").exists(), "a full fine-tune saves no adapter"


def test_dpo_logs_reward_margins_and_accuracies(tmp_path: Path, stage_config: StageConfig, tiny_model: Path) -> None:
    config = _config(tmp_path, stage_config, tiny_model, "dpo", dpo={"loss_type": ["sigmoid", "sft"], "beta": 0.2})
    assert _run(config) == 0
    metrics = _manifest(config)["metrics"]
    assert {"train/rewards/margins", "train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected"} <= set(
        metrics
    )


def test_dpo_with_the_base_model_as_reference_trains(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _config(
        tmp_path, stage_config, tiny_model, "dpo", dpo={"reference": "base"}, base_model_uri=tiny_model.as_uri()
    )
    assert _run(config) == 0
    assert _manifest(config)["metrics"]["param_delta_l2"] > 0


def test_dpo_with_lora_and_the_base_model_as_reference_trains(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _config(
        tmp_path,
        stage_config,
        tiny_model,
        "dpo",
        dpo={"reference": "base"},
        base_model_uri=tiny_model.as_uri(),
        lora={"r": 4, "alpha": 8},
    )
    assert _run(config) == 0
    assert _manifest(config)["metrics"]["param_delta_l2"] > 0
    assert (output_dir(config) / "adapter" / "adapter_config.json").is_file()


def test_grpo_is_rewarded_by_the_loop_verifier_and_logs_reward_statistics(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _config(tmp_path, stage_config, tiny_model, "grpo", scorer=VERIFIER)
    assert _run(config) == 0
    metrics = _manifest(config)["metrics"]
    assert {"train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/entropy"} <= set(metrics)
    assert "train/rewards/verifier/mean" in metrics, "the reward is select's verifier"


def test_grpo_majority_vote_reward_needs_no_answers(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    unlabelled = [{"prompt": row["prompt"], "record": "{}"} for row in TRAINING_DATA["grpo"]]
    config = _config(tmp_path, stage_config, tiny_model, "grpo")
    write_jsonl(Path(str(config["train_uri"]).removeprefix("file://")), unlabelled)
    assert _run(config) == 0
    assert "train/rewards/majority_vote/mean" in _manifest(config)["metrics"]


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_lora_saves_the_merged_model_as_the_checkpoint_and_the_adapter_beside_it(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, method: str
) -> None:
    from transformers import AutoModelForCausalLM

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    config = _config(tmp_path, stage_config, tiny_model, method, lora=lora)
    assert _run(config) == 0
    out = output_dir(config)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "checkpoint")
    assert not any("lora" in name for name, _ in merged.named_parameters()), "the checkpoint is a plain model"
    assert _manifest(config)["metrics"]["param_delta_l2"] > 0, "the merged adapter changed the weights"


def test_lora_target_modules_matching_nothing_exit_2_listing_candidates(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, stage_config, tiny_model, "sft", lora={"target_modules": ["q_prj"]})
    assert _run(config) == EXIT_INPUT_REJECTED
    error = capsys.readouterr().err
    assert "lora.targetModules" in error and "'q_prj'" in error
    assert "q_proj" in error and "v_proj" in error, "the message lists the names that would match"
    assert not (output_dir(config) / "_manifest.json").exists()


def test_dpo_without_any_pair_exits_2_saying_why_and_what_to_change(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, stage_config, tiny_model, "dpo")
    Path(str(config["train_uri"]).removeprefix("file://")).write_text("")
    assert _run(config) == EXIT_INPUT_REJECTED
    error = capsys.readouterr().err
    assert "no preference pair" in error and "scored the same" in error and "samplesPerPrompt" in error
    assert not (output_dir(config) / "_manifest.json").exists(), "nothing to promote"


def test_optimize_rejects_data_of_another_shape_naming_the_missing_field(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, stage_config, tiny_model, "dpo")
    write_jsonl(Path(str(config["train_uri"]).removeprefix("file://")), TRAINING_DATA["sft"])
    assert _run(config) == EXIT_INPUT_REJECTED
    assert "`chosen`" in capsys.readouterr().err


def test_optimize_pushes_its_metrics_under_its_own_job_before_the_manifest(
    tmp_path: Path,
    stage_config: StageConfig,
    tiny_model: Path,
    pushgateway: tuple[str, list[tuple[str, str, str]]],
) -> None:
    """Its own job: evaluate PUTs the same namespace/loop/iteration group later and must not replace these."""
    address, received = pushgateway
    config = _config(tmp_path, stage_config, tiny_model, "dpo", pushgateway=address)
    assert _run(config) == 0
    [(verb, path, body)] = received
    assert (verb, path) == ("PUT", "/metrics/job/selfimprove_optimize/namespace/test-ns/loop/test-loop/iteration/1")
    labels = '{iteration="1",loop="test-loop",method="dpo",namespace="test-ns"}'
    assert f"selfimprove_optimize_trainer_rewards_margins{labels} " in body
    assert f"selfimprove_optimize_param_delta_l2{labels} " in body
    assert "# TYPE selfimprove_optimize_train_loss gauge" in body
    assert f"selfimprove_optimize_trainer_loss{labels} " in body, "the trainer's train/loss, apart from train_loss"
    names = [line.split("{")[0] for line in body.splitlines() if line and not line.startswith("#")]
    assert len(names) == len(set(names)), "a Pushgateway refuses an exposition that names a series twice"


def test_metrics_that_would_share_a_series_name_are_pushed_once(stage_config: StageConfig, tmp_path: Path) -> None:
    from sil_stages.core.contract import OptimizeConfig, parse_stage_config
    from sil_stages.optimize.metrics import optimize_series

    config = parse_stage_config(_config(tmp_path, stage_config, tmp_path, "sft"))
    assert isinstance(config, OptimizeConfig)
    series = optimize_series(config, {"train_loss": 1.0, "train/loss": 2.0, "train/x.y": 3.0, "train/x_y": 4.0})
    assert [(s.name, s.value) for s in series] == [
        ("selfimprove_optimize_train_loss", 1.0),
        ("selfimprove_optimize_trainer_loss", 2.0),
        ("selfimprove_optimize_trainer_x_y", 3.0),
    ]

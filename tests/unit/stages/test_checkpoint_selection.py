"""The best checkpoint of a training run (sil_stages.optimize.checkpoint_selection): which step is chosen, when the
model is scored, what the manifest records, and the refusals before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from sil_stages.core.contract import OptimizeConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import CheckpointSelection, Scorer
from sil_stages.core.store import Store
from sil_stages.optimize.checkpoint_selection import (
    Selection,
    StepScore,
    best_step,
    check,
    due,
    read_validation,
    selection_metrics,
)
from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl


@pytest.mark.parametrize(
    ("scores", "chosen"),
    [
        ([(2, 0.4), (4, 0.7), (6, 0.5)], 4),  # a later step got worse: the better earlier one
        ([(2, 0.4), (4, 0.5), (6, 0.9)], 6),  # still improving: the last
        ([(2, 0.6), (4, 0.6), (6, 0.6)], 2),  # ties: the earliest (fewest updates)
        ([(3, 0.0)], 3),
    ],
)
def test_the_best_scored_step_is_chosen_and_the_earliest_of_equals(
    scores: list[tuple[int, float]], chosen: int
) -> None:
    assert best_step([StepScore(step, score) for step, score in scores]).step == chosen


def test_no_scored_step_is_an_error() -> None:
    with pytest.raises(ValueError, match="no step"):
        best_step([])


def test_the_manifest_records_every_score_the_choice_and_the_last_score() -> None:
    scores = [StepScore(2, 0.4), StepScore(4, 0.75), StepScore(6, 0.5)]
    assert selection_metrics(scores) == {
        "checkpoint_selection/step_2": 0.4,
        "checkpoint_selection/step_4": 0.75,
        "checkpoint_selection/step_6": 0.5,
        "checkpoint_selection/chosen_step": 4.0,
        "checkpoint_selection/chosen_score": 0.75,
        "checkpoint_selection/last_score": 0.5,
    }


@pytest.mark.parametrize(
    ("step", "every_steps", "epoch_end", "scored"),
    [
        (4, 2, False, True),
        (5, 2, False, False),
        (0, 2, False, False),
        (4, 2, True, False),  # with everySteps, epoch ends are not extra points
        (7, None, True, True),  # without, every epoch's end
        (7, None, False, False),
    ],
)
def test_the_model_is_scored_every_n_steps_else_at_each_epochs_end(
    step: int, every_steps: int | None, epoch_end: bool, scored: bool
) -> None:
    assert due(step, every_steps, epoch_end=epoch_end) is scored


def _config(tmp_path: Path, **fields: Any) -> OptimizeConfig:
    return OptimizeConfig.model_validate(
        {
            "loop": "l",
            "iteration": 1,
            "storage": {"uri": (tmp_path / "store").as_uri()},
            "output_uri": (tmp_path / "store" / "optimize").as_uri(),
            "train_uri": (tmp_path / "train.jsonl").as_uri(),
            "init_model_uri": "file:///m",
            **fields,
        }
    )


def test_deepspeed_is_refused_with_checkpoint_selection_naming_the_field(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        checkpoint_selection={"validation_uri": "file:///v.jsonl"},
        distributed={"deepspeed": "zero2"},
    )
    with pytest.raises(StageInputError, match=r"^checkpointSelection: not with distributed\.deepspeed"):
        check(config)


def test_a_majority_vote_scorer_is_refused_it_cannot_judge_one_answer(tmp_path: Path) -> None:
    config = _config(
        tmp_path, checkpoint_selection={"validation_uri": "file:///v.jsonl"}, scorer={"type": "majority-vote"}
    )
    with pytest.raises(StageInputError, match=r"^checkpointSelection: select.scorer majority-vote"):
        check(config)


def test_the_validation_set_is_cut_to_its_limit_and_needs_prompts(tmp_path: Path) -> None:
    store = Store(_config(tmp_path).storage)
    good = write_jsonl(tmp_path / "v.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(5)])
    settings = CheckpointSelection(validation_uri=good.as_uri(), limit=3)
    assert [r["prompt"] for r in read_validation(store, settings)] == ["0+1=", "1+1=", "2+1="]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "1+1="}])
    with pytest.raises(StageInputError, match=r"checkpointSelection\.validationUri"):
        read_validation(store, CheckpointSelection(validation_uri=bad.as_uri()))


def test_an_exact_match_scorer_needs_answers_in_the_validation_set_before_training(tmp_path: Path) -> None:
    store = Store(_config(tmp_path).storage)
    unanswered = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "1+1="}])
    settings = CheckpointSelection(validation_uri=unanswered.as_uri())
    with pytest.raises(StageInputError, match=r"checkpointSelection\.validationUri.*answer"):
        read_validation(store, settings, Scorer(type="verifier", verifier="exact-match"))
    assert read_validation(store, settings, Scorer(type="verifier", verifier="arithmetic:verify"))


class _ScoresInTurn:
    """Validation scores given in turn: the choice and the weights kept are what is tested, not the scoring."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    def score(self, model: Any) -> float:
        return self.scores.pop(0)


def test_the_best_steps_weights_are_put_back_after_a_worse_later_step() -> None:
    import torch

    model = torch.nn.Linear(2, 1)
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    model.register_parameter("frozen", frozen)
    selection = Selection(_ScoresInTurn([0.2, 0.8, 0.3]), every_steps=1, is_main=True)  # type: ignore[arg-type]
    weights = {}
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights[step] = model.weight.detach().clone()
        selection.record(step, model)
    selection.record(3, model)  # on_train_end at a step already scored: not scored twice
    metrics = selection.restore_best(model)
    assert torch.equal(model.weight.detach(), weights[2])
    assert metrics["checkpoint_selection/chosen_step"] == 2 and metrics["checkpoint_selection/last_score"] == 0.3
    assert set(selection.best) == {"weight", "bias"}, "only trainable weights are kept"


def test_ranks_other_than_zero_neither_score_nor_restore() -> None:
    import torch

    model = torch.nn.Linear(2, 1)
    selection = Selection(_ScoresInTurn([]), every_steps=1, is_main=False)  # type: ignore[arg-type]
    selection.record(1, model)
    assert selection.scores == [] and selection.restore_best(model) == {}


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("method", ["sft", "dpo", "grpo"])
def test_every_method_with_or_without_lora_records_its_scored_steps_and_choice(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, method: str, lora: bool
) -> None:
    """The callback rides on every method's trainer (full and LoRA): a score per step and the choice in the
    manifest. The random tiny model never adds right, so every step scores 0 and the earliest is chosen."""
    from tests.unit.stages.test_methods_training import _config as method_config

    validation = write_jsonl(
        tmp_path / "validation.jsonl", [{"prompt": "1+2=", "answer": "3"}, {"prompt": "2+2=", "answer": "4"}]
    )
    fields: dict[str, Any] = {
        "checkpoint_selection": {"validation_uri": validation.as_uri(), "every_steps": 1, "max_new_tokens": 2}
    }
    if lora:
        fields["lora"] = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    config = method_config(
        tmp_path, stage_config, tiny_model, method, scorer={"type": "verifier", "verifier": "exact-match"}, **fields
    )
    assert main(["optimize", "--config", json.dumps(config)]) == 0
    metrics = json.loads((output_dir(config) / "_manifest.json").read_text())["metrics"]
    assert {k: v for k, v in metrics.items() if k.startswith("checkpoint_selection/")} == {
        "checkpoint_selection/step_1": 0.0,
        "checkpoint_selection/step_2": 0.0,
        "checkpoint_selection/chosen_step": 1.0,
        "checkpoint_selection/chosen_score": 0.0,
        "checkpoint_selection/last_score": 0.0,
    }
    assert (output_dir(config) / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow
def test_with_two_processes_rank_0_scores_each_epoch_and_writes_the_choice(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """Two gloo processes under accelerate: global rank 0 alone scores (at each epoch's end without everySteps),
    keeps and restores the best step, and its manifest records the choice."""
    from tests.unit.stages.test_distributed_optimize import _sft_config, _stage

    validation = write_jsonl(tmp_path / "validation.jsonl", [{"prompt": "1+2=", "answer": "3"}])
    config = _sft_config(
        tmp_path,
        stage_config,
        tiny_model,
        distributed={"processesPerNode": 2},
        checkpoint_selection={"validation_uri": validation.as_uri(), "max_new_tokens": 2},
    )
    code, stderr, _ = _stage(config)
    assert code == 0, stderr
    assert "launching 2 training processes" in stderr
    metrics = json.loads((output_dir(config) / "_manifest.json").read_text())["metrics"]
    assert metrics["world_size"] == 2 and metrics["steps"] == 4  # 2 steps per epoch, 2 epochs
    assert {k for k in metrics if k.startswith("checkpoint_selection/step_")} == {
        "checkpoint_selection/step_2",
        "checkpoint_selection/step_4",
    }
    assert metrics["checkpoint_selection/chosen_step"] == 2  # the random tiny model scores 0 twice: the earliest

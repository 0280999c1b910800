"""optimize.checkpointSelection on a real training run: the demo base model fine-tuned on wrong sums gets worse step
by step, and the candidate the optimize stage writes is the better earlier step, scored by the loop's scorer on a
validation set of training prompts that are not evaluation items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_stages.cli import main
from sil_stages.core.models import load_model
from sil_stages.core.settings import Scorer
from sil_stages.optimize.checkpoint_selection import Validator
from sil_stages.select.scorers import ScorerContext, make_scorer
from tests.e2e.test_local_loop import EXAMPLE, base_model

__all__ = ["base_model"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 12
EVERY = 3


def _sum(prompt: str) -> int:
    return sum(int(term) for term in prompt.rstrip("=").split("+"))


def test_a_worse_last_step_is_not_the_candidate_the_best_earlier_step_is(
    tmp_path: Path, base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the scorer arithmetic:verify, as sil run puts the loop folder there
    lines = (EXAMPLE / "data" / "train_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    wrong = [{"prompt": p, "completion": f"{_sum(p) + 11}\n"} for p in prompts[:256]]  # off by 11: wrong sums
    validation = [{"prompt": p} for p in prompts[256:296]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wrong))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation))
    storage = (tmp_path / "store").as_uri()
    scorer = {"type": "verifier", "verifier": "arithmetic:verify"}
    config = {
        "stage": "optimize",
        "loop": "selection",
        "iteration": 1,
        "storage": {"uri": storage},
        "output_uri": f"{storage}/iterations/1/optimize",
        "train_uri": (tmp_path / "train.jsonl").as_uri(),
        "init_model_uri": base_model.resolve().as_uri(),
        "scorer": scorer,
        "method": "sft",
        "hyperparameters": {"learning_rate": 5e-5, "batch_size": 16, "max_steps": STEPS, "max_length": 32},
        "checkpoint_selection": {
            "validation_uri": (tmp_path / "validation.jsonl").as_uri(),
            "every_steps": EVERY,
            "max_new_tokens": 5,
        },
    }
    assert main(["optimize", "--config", json.dumps(config)]) == 0
    output = tmp_path / "store" / "iterations" / "1" / "optimize"
    metrics = json.loads((output / "_manifest.json").read_text())["metrics"]
    steps = {int(k.rsplit("_", 1)[1]): v for k, v in metrics.items() if k.startswith("checkpoint_selection/step_")}
    assert sorted(steps) == list(range(EVERY, STEPS + 1, EVERY)), metrics
    chosen = int(metrics["checkpoint_selection/chosen_step"])
    assert chosen < STEPS and metrics["checkpoint_selection/chosen_score"] > steps[STEPS], steps
    assert metrics["checkpoint_selection/chosen_score"] == max(steps.values())
    # The checkpoint handed to evaluate is the chosen step: scored again, it gets the chosen step's score.
    from sil_stages.core.models import load_tokenizer

    validator = Validator(
        records=validation,
        scorer=make_scorer(ScorerContext(settings=Scorer.model_validate(scorer))),
        tokenizer=load_tokenizer(str(output / "checkpoint")),
        max_new_tokens=5,
        batch_size=16,
    )
    assert validator.score(load_model(str(output / "checkpoint"))) == metrics["checkpoint_selection/chosen_score"]

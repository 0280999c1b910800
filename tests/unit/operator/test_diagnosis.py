"""Why a loop does not improve: the numbers the Rejected event and the end-of-run table give a user to act on."""

from __future__ import annotations

import pytest

from sil_operator.api.status import IterationStatus, StagePhase, StageStatus
from sil_operator.diagnosis import low_yield, why_not_improved


def _iteration(**metrics: dict[str, float]) -> IterationStatus:
    return IterationStatus(
        index=3,
        stages=[
            StageStatus(stage=stage, phase=StagePhase.SUCCEEDED, metrics=values) for stage, values in metrics.items()
        ],
    )


SELECT = {"scored": 2000.0, "kept": 24.0, "prompts": 500.0, "prompts_with_kept": 20.0, "mean_score": 0.012}
EVALUATE = {"delta": 0.01, "delta_ci_low": -0.03, "delta_ci_high": 0.05, "p_value": 0.71}


def test_a_rejection_says_the_yield_the_loss_and_the_interval() -> None:
    why = why_not_improved(_iteration(select=SELECT, optimize={"train_loss": 0.4123}, evaluate=EVALUATE))
    assert why == (
        "1.2% of samples scored; 480 of 500 prompts had no passing sample; kept 24 examples (1.2% of samples); "
        "train loss 0.412; candidate - champion +0.010 [-0.030, +0.050] p=0.71 "
        "(better, but not beyond chance: more evaluation items narrow the interval)"
    )


def test_with_a_graded_scorer_the_rejection_says_the_pass_rate_not_the_mean_score() -> None:
    """A reward model's mean score is a logit, no share of samples: the pass rate is what a user can act on."""
    select = {**SELECT, "mean_score": -3.2, "mean_pass_rate": 0.25}
    why = why_not_improved(_iteration(select=select))
    assert why.startswith("25.0% of samples passed select.keep.minScore; 480 of 500 prompts had no passing sample")


def test_a_rejection_names_empty_training_data_and_contamination() -> None:
    evaluate = {**EVALUATE, "delta": -0.02, "heldout/contamination": 0.04, "hard/contamination": 0.0}
    why = why_not_improved(_iteration(optimize={"train_examples": 0.0}, evaluate=evaluate))
    assert why == "nothing to train on; candidate - champion -0.020 [-0.030, +0.050] p=0.71; heldout contamination 4.0%"


def test_without_metrics_the_reason_says_so() -> None:
    assert why_not_improved(IterationStatus(index=1)) == "no stage metrics recorded"


@pytest.mark.parametrize(
    ("select", "warns"),
    [
        (SELECT, True),  # 1.2% kept
        ({**SELECT, "kept": 100.0}, False),  # 5%: enough
        ({"scored": 0.0, "kept": 0.0}, False),  # nothing sampled: another problem, not a yield
        ({}, False),
    ],
)
def test_low_yield_warns_below_five_percent_kept(select: dict[str, float], warns: bool) -> None:
    message = low_yield(select)
    assert (message is not None) is warns
    if message:
        assert message.startswith("select kept 24 of 2000 samples (1.2%); 480 of 500 prompts have no passing sample")


def test_a_contaminated_rejection_names_the_items_the_evaluate_manifest_found() -> None:
    named = [f"{n}: {n}+1=" for n in range(1, 8)]
    iteration = IterationStatus(
        index=2,
        stages=[
            StageStatus(
                stage="evaluate",
                phase=StagePhase.SUCCEEDED,
                metrics={"heldout/contamination": 0.035},
                findings={"heldout/contaminated": named},
            )
        ],
    )
    assert why_not_improved(iteration) == (
        "heldout contamination 3.5% (items 1: 1+1=; 2: 2+1=; 3: 3+1=; 4: 4+1=; 5: 5+1=; and 2 more in the evaluate "
        "manifest's findings)"
    )

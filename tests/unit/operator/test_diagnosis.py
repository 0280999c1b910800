"""Why a loop does not improve: the numbers the Rejected event and the end-of-run table give a user to act on."""

from __future__ import annotations

import pytest

from sil_operator import diagnosis
from sil_operator.api.status import (
    ChampionStatus,
    Decision,
    IterationStatus,
    LoopStatus,
    StagePhase,
    StageStatus,
)
from sil_operator.diagnosis import champion_greedy, low_yield, why_not_improved


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


# The likeliest lever of a low yield, from the numbers the loop has: greedy held-out accuracy (evaluate's champion
# score), the sampled pass rate and the difficulty band's count (select), the temperature (acquire).
LOW = {"scored": 1000.0, "kept": 29.0, "prompts": 250.0, "prompts_with_kept": 25.0}
FIXED = {"temperature": 1.0, "temperature_probe_seconds": 0.0}
AUTO = {"temperature": 0.9, "temperature_probe_seconds": 4.2}


@pytest.mark.parametrize(
    ("select", "greedy", "acquire", "lever"),
    [
        pytest.param(
            {**LOW, "mean_pass_rate": 0.03},
            0.4,
            FIXED,
            "greedy held-out accuracy 40.0% is far above the 3.0% of samples passing at temperature 1: the "
            "temperature is too high; set acquire.sampling.temperature: auto or a value below 1",
            id="greedy far above the pass rate: too hot",
        ),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.03},
            0.4,
            AUTO,
            "greedy held-out accuracy 40.0% is far above the 3.0% of samples passing at temperature 0.9: the "
            "temperature is too high; temperature: auto chose it, so lower "
            "acquire.sampling.autoTemperature.min and max",
            id="too hot under auto: its bounds",
        ),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.03},
            0.4,
            {},
            "greedy held-out accuracy 40.0% is far above the 3.0% of samples passing: the temperature is too high; "
            "set acquire.sampling.temperature: auto or a value",
            id="too hot, temperature unknown",
        ),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.03},
            0.05,
            FIXED,
            "greedy held-out accuracy 5.0% and 3.0% of samples passing: the task is beyond the model; use easier "
            "prompts or a stronger base model (spec.model)",
            id="both low: beyond the model",
        ),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.5, "prompts_out_of_band": 240.0},
            0.6,
            FIXED,
            "50.0% of samples pass, but 240 of 250 prompts fell outside select.keep.difficulty: the band is too "
            "narrow; widen minPassRate/maxPassRate (or drop exclusive)",
            id="pass rate fine, prompts outside the band: band too narrow",
        ),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.5, "prompts_out_of_band": 240.0},
            None,
            {},
            "50.0% of samples pass, but 240 of 250 prompts fell outside select.keep.difficulty: the band is too "
            "narrow; widen minPassRate/maxPassRate (or drop exclusive)",
            id="the band needs no greedy score",
        ),
        pytest.param({**LOW, "mean_pass_rate": 0.03}, None, FIXED, None, id="greedy unknown: no lever"),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.25}, 0.3, FIXED, None, id="pass rate near greedy: not the temperature"
        ),
        pytest.param({**LOW, "mean_pass_rate": 0.08}, 0.15, FIXED, None, id="half greedy but a small gap: no lever"),
        pytest.param(
            {**LOW, "mean_pass_rate": 0.5, "prompts_out_of_band": 100.0}, 0.6, FIXED, None, id="band keeps most"
        ),
        pytest.param(LOW, 0.4, FIXED, None, id="no pass rate reported"),
    ],
)
def test_the_likeliest_lever_of_a_low_yield(
    select: dict[str, float], greedy: float | None, acquire: dict[str, float], lever: str | None
) -> None:
    assert diagnosis.lever(select, greedy, acquire) == lever
    warning = low_yield(select, greedy, acquire)
    assert warning is not None
    if lever is None:
        assert warning.endswith("use easier prompts or loosen select.keep"), "no lever: the generic advice"
    else:
        assert warning.endswith(": " + lever)


def test_a_rejection_with_a_low_yield_names_the_lever_from_the_iterations_own_evaluation() -> None:
    select = {**LOW, "mean_pass_rate": 0.03}
    why = why_not_improved(_iteration(acquire=FIXED, select=select, evaluate={"champion_score": 0.4}))
    assert "; greedy held-out accuracy 40.0% is far above the 3.0% of samples passing at temperature 1" in why


def test_a_rejection_with_a_fine_yield_names_no_lever() -> None:
    select = {**LOW, "kept": 400.0, "mean_pass_rate": 0.1}
    assert "temperature" not in why_not_improved(
        _iteration(acquire=FIXED, select=select, evaluate={"champion_score": 0.4})
    )


@pytest.mark.parametrize(
    ("decisions", "champion", "greedy"),
    [
        ([], None, None),
        ([(Decision.REJECTED, 0.41, 0.40)], None, 0.40),  # the base, as iteration 1 measured it
        ([(Decision.REJECTED, 0.41, 0.40), (Decision.PROMOTED, 0.55, 0.40)], 0.55, 0.55),
        ([(Decision.PROMOTED, 0.55, 0.40), (None, None, None)], 0.55, 0.55),  # the running iteration is skipped
        ([], 0.7, 0.7),  # history trimmed: the champion pointer's score
    ],
)
def test_the_champion_greedy_score_is_the_last_decided_iterations_measurement(
    decisions: list[tuple[Decision | None, float | None, float | None]], champion: float | None, greedy: float | None
) -> None:
    iterations = [
        IterationStatus(index=i, decision=d, candidate_score=c, champion_score=h)
        for i, (d, c, h) in enumerate(decisions, start=1)
    ]
    pointer = ChampionStatus(iteration=1, uri="file:///m", score=champion) if champion is not None else None
    assert champion_greedy(LoopStatus(iterations=iterations, champion=pointer)) == greedy

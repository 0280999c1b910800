"""Why a loop does not improve, in numbers a user can act on. Pure: reads the stage metrics folded into the status.

A rejected iteration is the symptom; the cause is usually upstream: the model rarely produces a passing sample
(raise samplesPerPrompt, lower the difficulty), select keeps almost nothing (loosen keep), training did not fit
(look at the loss), or the candidate is better but not beyond chance (more evaluation items). The Rejected event
and the end-of-run table say which, from the select, optimize and evaluate manifests' metrics.

When select keeps little, `lever` names the likeliest cause from numbers the loop already has, because the generic
advice (more samples, easier prompts) misses the commonest one: a model that is right greedily far more often than
its samples are (greedy held-out accuracy 0.4, 3 % of samples passing at temperature 1.0) is sampled too hot.
"""

from __future__ import annotations

from collections.abc import Mapping

from sil_operator.api.status import Decision, IterationStatus, LoopStatus

LOW_YIELD = 0.05
"""Below this share of samples kept, select's success comes with a LowYield warning while the loop runs."""
NAMED_ITEMS = 5
"""Contaminated items named in one line; the evaluate manifest's findings name up to 50 per dataset."""


def _metrics(iteration: IterationStatus, stage: str) -> Mapping[str, float]:
    status = iteration.stage(stage)
    return status.metrics if status else {}


TOO_HOT = 0.5
"""The sampled pass rate below this share of the greedy accuracy (and GAP below it) means: sampled too hot."""
GAP = 0.1
"""The least difference between greedy accuracy and sampled pass rate that counts as "far above"."""
BEYOND = 0.1
"""Greedy accuracy and sampled pass rate both below this: the task is beyond the model."""
PASS_RATE_FINE = 0.2
"""A sampled pass rate from this up gives select enough to keep, unless the difficulty band drops the prompts."""
OUT_OF_BAND = 0.8
"""With a fine pass rate, this share of the prompts outside select.keep.difficulty means the band is too narrow."""


def lever(
    select: Mapping[str, float], greedy: float | None = None, acquire: Mapping[str, float] | None = None
) -> str | None:
    """The likeliest cause of a low yield, with what to change; None when the numbers point at none.

    `greedy` is the champion's greedy held-out accuracy (evaluate's champion score), `acquire` the acquire metrics
    (the temperature sampled with; a probe time above 0 means temperature: auto chose it). In order:
    - pass rate fine but most prompts outside the difficulty band: the band is too narrow;
    - greedy accuracy far above the sampled pass rate: the temperature is too high;
    - both low: the task is beyond the model."""
    rate = select.get("mean_pass_rate")
    if rate is None:
        return None
    prompts, out_of_band = select.get("prompts"), select.get("prompts_out_of_band")
    if rate >= PASS_RATE_FINE and prompts and out_of_band is not None and out_of_band / prompts >= OUT_OF_BAND:
        return (
            f"{rate:.1%} of samples pass, but {out_of_band:.0f} of {prompts:.0f} prompts fell outside "
            "select.keep.difficulty: the band is too narrow; widen minPassRate/maxPassRate (or drop exclusive)"
        )
    if greedy is None:
        return None
    temperature = (acquire or {}).get("temperature")
    if greedy - rate >= GAP and rate < TOO_HOT * greedy:
        at = f" at temperature {temperature:g}" if temperature is not None else ""
        message = (
            f"greedy held-out accuracy {greedy:.1%} is far above the {rate:.1%} of samples passing{at}: the "
            "temperature is too high; "
        )
        if (acquire or {}).get("temperature_probe_seconds", 0.0) > 0.0:
            return message + "temperature: auto chose it, so lower acquire.sampling.autoTemperature.min and max"
        lower = f" below {temperature:g}" if temperature is not None else ""
        return message + f"set acquire.sampling.temperature: auto or a value{lower}"
    if greedy < BEYOND and rate < BEYOND:
        return (
            f"greedy held-out accuracy {greedy:.1%} and {rate:.1%} of samples passing: the task is beyond the "
            "model; use easier prompts or a stronger base model (spec.model)"
        )
    return None


def champion_greedy(status: LoopStatus) -> float | None:
    """The current champion's greedy held-out accuracy, as the last decided iteration measured it (the candidate's
    score when it was promoted, the champion's when it was rejected); None before any evaluation."""
    for iteration in reversed(status.iterations):
        if iteration.decision is Decision.PROMOTED and iteration.candidate_score is not None:
            return iteration.candidate_score
        if iteration.decision is Decision.REJECTED and iteration.champion_score is not None:
            return iteration.champion_score
    return status.champion.score if status.champion else None


def low_yield(
    select: Mapping[str, float], greedy: float | None = None, acquire: Mapping[str, float] | None = None
) -> str | None:
    """A warning when select kept under LOW_YIELD of the samples; None otherwise (or without the numbers). It names
    the likeliest lever (`lever`) when the numbers point at one, else the generic advice."""
    scored, kept = select.get("scored"), select.get("kept")
    if not scored or kept is None or kept / scored >= LOW_YIELD:
        return None
    message = f"select kept {kept:.0f} of {scored:.0f} samples ({kept / scored:.1%})"
    prompts, with_kept = select.get("prompts"), select.get("prompts_with_kept")
    if prompts and with_kept is not None:
        message += f"; {prompts - with_kept:.0f} of {prompts:.0f} prompts have no passing sample"
    named = lever(select, greedy, acquire)
    if named:
        return f"{message}: {named}"
    return (
        message + ": too little training data to improve on; sample more per prompt (acquire.samplesPerPrompt), "
        "use easier prompts or loosen select.keep"
    )


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _items(named: list[str]) -> str:
    """The first NAMED_ITEMS of a dataset's contaminated items, so the user can find them in the data."""
    if not named:
        return ""
    shown = "; ".join(named[:NAMED_ITEMS])
    more = len(named) - NAMED_ITEMS
    return f" (items {shown}" + (f"; and {more} more in the evaluate manifest's findings)" if more > 0 else ")")


def why_not_improved(iteration: IterationStatus) -> str:
    """One line: the yield of select, the training loss, the candidate-champion interval, and the guards that fired."""
    parts: list[str] = []
    select = _metrics(iteration, "select")
    if "mean_pass_rate" in select:  # a reward model's or a judge's mean score is no share; the pass rate is
        parts.append(f"{select['mean_pass_rate']:.1%} of samples passed select.keep.minScore")
    elif "mean_score" in select:  # select manifests written before pass rates were reported
        parts.append(f"{select['mean_score']:.1%} of samples scored")
    prompts, with_kept = select.get("prompts"), select.get("prompts_with_kept")
    if prompts and with_kept is not None:
        parts.append(f"{prompts - with_kept:.0f} of {prompts:.0f} prompts had no passing sample")
    if "kept" in select:
        kept = f"kept {select['kept']:.0f} examples"
        if select.get("scored"):
            kept += f" ({select['kept'] / select['scored']:.1%} of samples)"
        parts.append(kept)
        if select.get("scored") and select["kept"] / select["scored"] < LOW_YIELD:
            cause = lever(select, _metrics(iteration, "evaluate").get("champion_score"), _metrics(iteration, "acquire"))
            if cause:
                parts.append(cause)
    optimize = _metrics(iteration, "optimize")
    if optimize.get("train_examples") == 0:
        parts.append("nothing to train on")
    elif "train_loss" in optimize:
        parts.append(f"train loss {optimize['train_loss']:.3f}")
    evaluate = _metrics(iteration, "evaluate")
    if {"delta", "delta_ci_low", "delta_ci_high"} <= evaluate.keys():
        interval = (
            f"candidate - champion {_signed(evaluate['delta'])} "
            f"[{_signed(evaluate['delta_ci_low'])}, {_signed(evaluate['delta_ci_high'])}]"
        )
        if "p_value" in evaluate:
            interval += f" p={evaluate['p_value']:.3g}"
        if evaluate["delta_ci_low"] <= 0 < evaluate["delta"]:
            interval += " (better, but not beyond chance: more evaluation items narrow the interval)"
        parts.append(interval)
    contaminated = {k: v for k, v in evaluate.items() if k.endswith("/contamination") and v > 0}
    stage = iteration.stage("evaluate")
    named = stage.findings if stage else {}
    for key, share in sorted(contaminated.items()):
        dataset = key.split("/")[0]
        parts.append(f"{dataset} contamination {share:.1%}{_items(named.get(f'{dataset}/contaminated', []))}")
    return "; ".join(parts) if parts else "no stage metrics recorded"

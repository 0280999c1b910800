"""Why a loop does not improve, in numbers a user can act on. Pure: reads the stage metrics folded into the status.

A rejected iteration is the symptom; the cause is usually upstream: the model rarely produces a passing sample
(raise samplesPerPrompt, lower the difficulty), select keeps almost nothing (loosen keep), training did not fit
(look at the loss), or the candidate is better but not beyond chance (more evaluation items). The Rejected event
and the end-of-run table say which, from the select, optimize and evaluate manifests' metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

from sil_operator.api.status import IterationStatus

LOW_YIELD = 0.05
"""Below this share of samples kept, select's success comes with a LowYield warning while the loop runs."""
NAMED_ITEMS = 5
"""Contaminated items named in one line; the evaluate manifest's findings name up to 50 per dataset."""


def _metrics(iteration: IterationStatus, stage: str) -> Mapping[str, float]:
    status = iteration.stage(stage)
    return status.metrics if status else {}


def low_yield(select: Mapping[str, float]) -> str | None:
    """A warning when select kept under LOW_YIELD of the samples; None otherwise (or without the numbers)."""
    scored, kept = select.get("scored"), select.get("kept")
    if not scored or kept is None or kept / scored >= LOW_YIELD:
        return None
    message = f"select kept {kept:.0f} of {scored:.0f} samples ({kept / scored:.1%})"
    prompts, with_kept = select.get("prompts"), select.get("prompts_with_kept")
    if prompts and with_kept is not None:
        message += f"; {prompts - with_kept:.0f} of {prompts:.0f} prompts have no passing sample"
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

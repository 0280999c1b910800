"""`acquire.sampling.temperature: auto`: the champion's sampling temperature, chosen each iteration by a probe.

Why: the temperature decides how much select keeps. Too hot, and a weak model's samples are mostly wrong (a model
right 40 % of the time greedily kept 2.9 % of its samples at 1.0); too cold, and every sample of a prompt is the
same answer, which dedupe and topK collapse to one. The best value moves as the model improves, so a fixed one is
right at most for a while.

How: before sampling the iteration, a seeded draw of `autoTemperature.probePrompts` of the iteration's prompts is
sampled at every temperature of the grid (`samplesPerPrompt` each, the same generation seed at every temperature,
so the temperatures are compared on the same random numbers), scored with the loop's own select scorer, and each
temperature gets the objective select would realise: the mean over the probed prompts of the distinct completions
scoring at least `keep.minScore`, capped at `keep.topK`, counting 0 for a prompt whose pass rate falls outside
`keep.difficulty`. The highest objective wins; ties go to the lower temperature (the colder of two equally
productive temperatures gives the more accurate data). Everything is seeded from the loop seed and the iteration,
so a retried acquire picks the same temperature.

`pick` and `probe_row` are pure (a table test gives them crafted scores); `choose` runs the probe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sil_stages.core.chat import model_prompt, prompt_text
from sil_stages.core.generation import GenerationEngine, SamplingRequest
from sil_stages.core.records import Record
from sil_stages.core.settings import AutoTemperature, Keep, Sampling
from sil_stages.select.scorers import PromptSamples, Score, Scorer
from sil_stages.select.selection import Scored, in_band, pass_rate, passes

TEMPERATURE_FILE = "temperature.json"
"""acquire: the probe table and the choice, beside samples.jsonl (for people and reports)."""


@dataclass(frozen=True)
class ProbeRow:
    """One temperature of the probe: what select would make of its samples."""

    temperature: float
    pass_share: float
    """The share of the probe samples scoring at least keep.minScore."""
    distinct_passing: float
    """Distinct passing completions per probed prompt (before topK and the difficulty band)."""
    prompts_in_band: int
    """Probed prompts whose pass rate lies in keep.difficulty (all of them without a band)."""
    kept: int
    """The examples select would keep from the probed prompts: the objective's numerator (an integer, so ties are
    exact)."""
    objective: float
    """kept / probed prompts: the expected kept examples per prompt."""


@dataclass(frozen=True)
class Choice:
    """The temperature picked, the table it was picked from, and why, in words."""

    temperature: float
    rows: tuple[ProbeRow, ...]
    why: str
    probe_prompts: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "why": self.why,
            "probe_prompts": self.probe_prompts,
            "seconds": self.seconds,
            "rows": [asdict(row) for row in self.rows],
        }

    def findings(self) -> list[str]:
        """The table as manifest findings: one line per temperature, then why."""
        lines = [
            f"{row.temperature:g}: pass share {row.pass_share:.3f}, distinct passing per prompt "
            f"{row.distinct_passing:.3f}, in band {row.prompts_in_band}/{self.probe_prompts}, objective "
            f"{row.objective:.3f}"
            for row in self.rows
        ]
        return [*lines, self.why]


def kept_from_prompt(scored: Sequence[Scored], keep: Keep) -> int:
    """What select keeps from one prompt's samples (before dedupe across prompts): its distinct passing completions,
    at most keep.topK, and none when the prompt's pass rate is outside keep.difficulty."""
    if not in_band(pass_rate(scored, keep.min_score), keep.difficulty):
        return 0
    distinct = len({item.completion for item in scored if passes(item, keep.min_score)})
    return distinct if keep.top_k is None else min(distinct, keep.top_k)


def probe_row(
    temperature: float, groups: Sequence[PromptSamples], scores: Sequence[Sequence[Score]], keep: Keep
) -> ProbeRow:
    """The objective of one temperature from its scored probe samples."""
    samples = passing = distinct = in_band_count = kept = 0
    for group, group_scores in zip(groups, scores, strict=True):
        scored = [Scored(group.prompt, c, s.value) for c, s in zip(group.completions, group_scores, strict=True)]
        samples += len(scored)
        passing += sum(passes(item, keep.min_score) for item in scored)
        distinct += len({item.completion for item in scored if passes(item, keep.min_score)})
        in_band_count += in_band(pass_rate(scored, keep.min_score), keep.difficulty)
        kept += kept_from_prompt(scored, keep)
    prompts = max(1, len(groups))
    return ProbeRow(
        temperature=temperature,
        pass_share=passing / samples if samples else 0.0,
        distinct_passing=distinct / prompts,
        prompts_in_band=in_band_count,
        kept=kept,
        objective=kept / prompts,
    )


def pick(rows: Sequence[ProbeRow]) -> ProbeRow:
    """The row with the most kept examples; of equal ones, the lowest temperature."""
    if not rows:
        raise ValueError("no temperature was probed")
    return min(rows, key=lambda row: (-row.kept, row.temperature))


def explain(chosen: ProbeRow, rows: Sequence[ProbeRow], prompts: int) -> str:
    """Why `chosen`, in one line: its objective against the runner-up's."""
    others = [row for row in rows if row is not chosen]
    line = (
        f"temperature {chosen.temperature:g}: {chosen.objective:.3f} expected kept examples per prompt "
        f"(pass share {chosen.pass_share:.3f}, {chosen.distinct_passing:.3f} distinct passing answers per prompt) "
        f"on {prompts} probe prompts"
    )
    if others:
        runner_up = pick(others)
        relation = "ties with" if runner_up.kept == chosen.kept else "beats"
        line += f"; {relation} {runner_up.temperature:g} ({runner_up.objective:.3f})"
        if relation == "ties with":
            line += ", the lower temperature wins ties"
    if chosen.kept == 0:
        line += "; no temperature gave select anything to keep, so the lowest was taken"
    return line


def probe_draw(prompts: Sequence[Record], count: int, seed: int) -> list[Record]:
    """The probed prompts: `count` of them drawn with `seed`, in their order (all when there are fewer)."""
    if count >= len(prompts):
        return list(prompts)
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), count))
    return [prompts[index] for index in chosen]


def choose(
    engine: GenerationEngine,
    scorer: Scorer,
    prompts: Sequence[Record],
    *,
    sampling: Sampling,
    bounds: AutoTemperature,
    keep: Keep,
    samples_per_prompt: int,
    draw_seed: int,
    generation_seed: int,
    clock: Callable[[], float] = time.monotonic,
) -> Choice:
    """Probes every temperature of `bounds.grid()` on a seeded draw of `prompts` and picks the best (module doc)."""
    started = clock()
    probed = probe_draw(prompts, bounds.probe_prompts, draw_seed)
    asked = [model_prompt(record) for record in probed]  # as the iteration's sampling asks (a chat loop: messages)
    texts = [prompt_text(record) for record in probed]
    contexts = [{key: value for key, value in record.items() if key not in ("prompt", "messages")} for record in probed]
    rows: list[ProbeRow] = []
    for temperature in bounds.grid():
        request = SamplingRequest(
            n=samples_per_prompt,
            temperature=temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            seed=generation_seed,
        )
        completions = engine.generate(asked, request)
        groups = [
            PromptSamples(text, tuple(samples), {"prompt": text, **context})
            for text, samples, context in zip(texts, completions, contexts, strict=True)
        ]
        rows.append(probe_row(temperature, groups, scorer.score(groups), keep))
    chosen = pick(rows)
    return Choice(
        temperature=chosen.temperature,
        rows=tuple(rows),
        why=explain(chosen, rows, len(probed)),
        probe_prompts=len(probed),
        seconds=clock() - started,
    )

"""select: score every sampled completion, filter, and write the training data the optimize method consumes.

Scoring is the registered scorer `scorer.type` names (`sil_stages.select.scorers`: a verifier, a majority vote, a reward
model, an LLM judge, or a user class), called on batches of whole prompt groups. Then, in this order:
1. difficulty (`keep.difficulty`): each prompt's pass rate is the share of its samples scoring at least
   `keep.min_score`; a prompt outside the band gives nothing (online difficulty filtering / DAPO's dynamic
   sampling: a prompt whose samples are all right or all wrong carries no signal);
2. per prompt, by data shape (`data`, the optimize method's, see `sil_stages.core.methods.DataShape`):
   - prompt-completion: completions scoring at least `keep.min_score`, deduplicated, then the `keep.top_k`
     best (best-of-n) as `{"prompt", "completion"}`, nothing else, so SFTTrainer trains on the completion only;
   - preference: one `{"prompt", "chosen", "rejected"}` pair, its best completion over its worst when their scores
     differ by at least `pairs.min_margin` (TRL's preference format);
   - prompt-only: one `{"prompt", "record"}` row per distinct prompt, `record` the prompt's record as JSON, for a
     method that generates and scores its own rollouts;
3. dedupe (`keep.dedupe`): exact or MinHash near-duplicates, within the iteration and, with
   `acrossIterations`, against the data kept in earlier iterations;
4. accumulate (`accumulate`): train on the data kept in all iterations so far, capped.

Writes `kept.jsonl` (this iteration's kept examples), `train.jsonl` (what optimize trains on: kept, or accumulated)
and `scored.jsonl` (every completion with its score, the scorer's details, its prompt's pass rate and whether it
was kept). The manifest's metrics say what each filter removed, the pass-rate histogram and the scorer's own
report; they are pushed as `selfimprove_select_*` series when a Pushgateway is configured.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm  # type: ignore[import-untyped]

from sil_stages.core.chat import assistant_turn, content_text
from sil_stages.core.contract import KEPT_FILE, SCORED_FILE, TRAIN_FILE, Manifest, SelectConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.methods import DataShape
from sil_stages.core.records import Record, read_jsonl, require_field, to_jsonl
from sil_stages.core.seeding import derive_seed
from sil_stages.core.store import Store
from sil_stages.select import metrics as select_metrics
from sil_stages.select.dedupe import Deduper, make_deduper, preload
from sil_stages.select.kept_history import accumulate, read_earlier_kept
from sil_stages.select.scorers import PromptSamples, Score, Scorer, ScorerContext, make_scorer
from sil_stages.select.selection import (
    PASS_RATE_BUCKETS,
    Scored,
    in_band,
    pair,
    pass_rate,
    pass_rate_bucket,
    passes,
    top_k,
)

log = logging.getLogger(__name__)

GROUPS_PER_CALL = 256
"""Prompt groups handed to the scorer at once: big enough for a model scorer's batches, small enough to show
progress."""

SHAPE_KEYS: dict[DataShape, frozenset[str]] = {
    "prompt-completion": frozenset({"prompt", "completion"}),
    "preference": frozenset({"prompt", "chosen", "rejected"}),
    "prompt-only": frozenset({"prompt", "record"}),
}


def example_text(row: Record) -> str:
    """The text an example is deduplicated on: its fields in a fixed order (the record of prompt-only rows aside)."""
    return "\n".join(content_text(row[key]) for key in ("prompt", "completion", "chosen", "rejected") if key in row)


def _groups(records: list[Record], uri: str) -> list[PromptSamples]:
    groups: list[PromptSamples] = []
    for number, record in enumerate(records, start=1):
        completions = record["completions"]
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise StageInputError(f"samples_uri: record {number} of {uri}: `completions` is not a string list")
        context = {key: value for key, value in record.items() if key != "completions"}
        groups.append(PromptSamples(str(record["prompt"]), tuple(completions), context))
    return groups


def score_all(scorer: Scorer, groups: Sequence[PromptSamples]) -> list[list[Score]]:
    scores: list[list[Score]] = []
    for start in tqdm(range(0, len(groups), GROUPS_PER_CALL), desc="score", unit="batch", leave=False):
        scores.extend(scorer.score(groups[start : start + GROUPS_PER_CALL]))
    return scores


@dataclass
class Selection:
    """What select decided: the kept examples, every completion's row, and what each rule removed."""

    kept: list[Record] = field(default_factory=list)
    scored_rows: list[Record] = field(default_factory=list)
    removed: Counter[str] = field(default_factory=Counter)
    pass_rates: list[float] = field(default_factory=list)
    prompts_out_of_band: int = 0
    prompts_with_kept: int = 0


def _as_data(group: PromptSamples, completion: str | None = None) -> Any:
    """A prompt, or a completion, as the training data holds it: text, or in a conversational loop (the samples
    carry the prompt's `messages`) TRL's conversational format, so SFT/DPO/GRPO render them with the chat template
    the stages prompted with (`sil_stages.core.chat`) and SFT's loss covers the assistant turn only."""
    messages = group.record.get("messages")
    if completion is not None:
        return completion if messages is None else assistant_turn(completion)
    return group.prompt if messages is None else list(messages)


def _candidates(
    group: PromptSamples, scored: list[Scored], config: SelectConfig, removed: Counter[str], seen_prompts: set[str]
) -> list[tuple[Record, int | None]]:
    """The examples a prompt offers, each with the index of its completion (None: not from one completion)."""
    if config.data == "preference":
        best_over_worst = pair(scored, config.pairs.min_margin)
        if best_over_worst is None:
            removed["no_pair"] += 1
            return []
        row = {
            "prompt": _as_data(group),
            "chosen": _as_data(group, best_over_worst.chosen),
            "rejected": _as_data(group, best_over_worst.rejected),
        }
        return [(row, None)]
    if config.data == "prompt-only":
        if group.prompt in seen_prompts:
            removed["repeated_prompt"] += 1
            return []
        seen_prompts.add(group.prompt)
        return [({"prompt": _as_data(group), "record": json.dumps(dict(group.record))}, None)]
    passing = [index for index, item in enumerate(scored) if passes(item, config.keep.min_score)]
    removed["min_score"] += len(scored) - len(passing)
    return [({"prompt": _as_data(group), "completion": _as_data(group, scored[i].completion)}, i) for i in passing]


def _keep_prompt(
    group: PromptSamples,
    scored: list[Scored],
    config: SelectConfig,
    selection: Selection,
    deduper: Deduper,
    seen_prompts: set[str],
) -> tuple[list[Record], set[int]]:
    """A prompt in the difficulty band: its examples after dedupe and top-k, and the indices of the completions used."""
    admitted: list[tuple[Record, int | None]] = []
    for row, index in _candidates(group, scored, config, selection.removed, seen_prompts):
        if deduper.admit(example_text(row)):
            admitted.append((row, index))
        else:
            selection.removed["dedupe"] += 1
    if config.data == "prompt-completion" and config.keep.top_k is not None:
        best = top_k(admitted, config.keep.top_k, score=lambda candidate: scored[candidate[1] or 0].score)
        selection.removed["top_k"] += len(admitted) - len(best)
        admitted = best
    rows = [row for row, _ in admitted]
    used = {index for _, index in admitted if index is not None}
    if config.data == "preference" and rows:
        chosen, rejected = (content_text(rows[0][key]) for key in ("chosen", "rejected"))
        used = {group.completions.index(chosen), group.completions.index(rejected)}
    return rows, used


def choose(
    groups: Sequence[PromptSamples], scores: Sequence[Sequence[Score]], config: SelectConfig, deduper: Deduper
) -> Selection:
    """The keep rules over every prompt, in order (pure but for the deduper's memory)."""
    selection = Selection()
    seen_prompts: set[str] = set()
    for group, group_scores in zip(groups, scores, strict=True):
        scored = [Scored(group.prompt, c, s.value) for c, s in zip(group.completions, group_scores, strict=True)]
        rate = pass_rate(scored, config.keep.min_score)
        selection.pass_rates.append(rate)
        kept_here: list[Record] = []
        used: set[int] = set()
        if in_band(rate, config.keep.difficulty):
            kept_here, used = _keep_prompt(group, scored, config, selection, deduper, seen_prompts)
        else:
            selection.prompts_out_of_band += 1
            selection.removed["difficulty"] += len(scored)
        for index, (completion, score) in enumerate(zip(group.completions, group_scores, strict=True)):
            selection.scored_rows.append(
                {
                    "prompt": group.prompt,
                    "completion": completion,
                    "score": score.value,
                    **dict(score.details),
                    "pass_rate": rate,
                    "kept": index in used,
                }
            )
        selection.kept.extend(kept_here)
        selection.prompts_with_kept += bool(kept_here)
    return selection


def _distribution(name: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        f"{name}_mean": statistics.fmean(values),
        f"{name}_std": statistics.pstdev(values),
        f"{name}_min": min(values),
        f"{name}_max": max(values),
    }


def report(
    selection: Selection, train: list[Record], scorer: Scorer, accumulated_from: int, prompts: int
) -> dict[str, float]:
    """The select manifest's metrics: counts, what each rule removed, the pass-rate histogram, score statistics."""
    values = [row["score"] for row in selection.scored_rows]
    scores = [float(v) for v in values if v is not None]
    kept_scores = [float(r["score"]) for r in selection.scored_rows if r["kept"] and r["score"] is not None]
    metrics: dict[str, float] = {
        "scored": float(len(values)),
        "unscored": float(len(values) - len(scores)),
        "kept": float(len(selection.kept)),
        "train_examples": float(len(train)),
        "accumulated_iterations": float(accumulated_from),
        "prompts": float(prompts),
        "prompts_with_kept": float(selection.prompts_with_kept),
        "prompts_out_of_band": float(selection.prompts_out_of_band),
        "mean_score": statistics.fmean(scores) if scores else 0.0,
        "mean_pass_rate": statistics.fmean(selection.pass_rates) if selection.pass_rates else 0.0,
    }
    for rule in ("min_score", "difficulty", "dedupe", "top_k", "no_pair", "repeated_prompt"):
        metrics[f"removed_{rule}"] = float(selection.removed[rule])
    buckets = Counter(pass_rate_bucket(rate) for rate in selection.pass_rates)
    for name, _, _ in PASS_RATE_BUCKETS:
        metrics[f"{select_metrics.PASS_RATE_KEY}{name}"] = float(buckets[name])
    metrics.update(_distribution("score", scores))
    if kept_scores:
        metrics["kept_score_mean"] = statistics.fmean(kept_scores)
    metrics.update(scorer.report())
    return metrics


def run(config: SelectConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.samples_uri, field="samples_uri")
    require_field(records, "prompt", uri=config.samples_uri, field="samples_uri")
    require_field(records, "completions", uri=config.samples_uri, field="samples_uri")
    groups = _groups(records, config.samples_uri)
    scorer = make_scorer(
        ScorerContext(
            settings=config.scorer,
            field="select.scorer",
            store=store,
            champion_uri=config.champion_uri,
            seed=derive_seed(config.seed, config.iteration, "select"),
            engine=config.engine,
            chat=config.chat,
        )
    )
    scores = score_all(scorer, groups)

    needs_history = config.accumulate.enabled or config.keep.dedupe.across_iterations
    earlier = read_earlier_kept(store, config.earlier_select_uris, SHAPE_KEYS[config.data]) if needs_history else []
    deduper = make_deduper(config.keep.dedupe)
    if config.keep.dedupe.across_iterations:
        preload(deduper, (example_text(row) for kept in earlier for row in kept.rows))
    selection = choose(groups, scores, config, deduper)
    train = (
        accumulate(selection.kept, earlier, config.accumulate.max_examples)
        if config.accumulate.enabled
        else selection.kept
    )

    outputs.write_text(KEPT_FILE, to_jsonl(selection.kept))
    outputs.write_text(TRAIN_FILE, to_jsonl(train))
    outputs.write_text(SCORED_FILE, to_jsonl(selection.scored_rows))
    metrics = report(selection, train, scorer, len(earlier) if config.accumulate.enabled else 0, len(records))
    select_metrics.push_metrics(config, metrics)
    log.info(
        "kept %d %s rows of %d completions (%s); training on %d",
        len(selection.kept),
        config.data,
        len(selection.scored_rows),
        ", ".join(f"{rule} removed {count}" for rule, count in selection.removed.items() if count) or "none removed",
        len(train),
    )
    return outputs.seal(stage="select", loop=config.loop, iteration=config.iteration, metrics=metrics)

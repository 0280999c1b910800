"""select: score every sampled completion and write the training data the optimize method consumes.

Two scorers. `verifier` scores each completion on its own: `exact-match` against the record's `answer`, or a
user function `module:function` (see `scoring` for its signature). `majority-vote` needs no labels: the most
frequent answer among a prompt's samples is taken as its pseudo-label, and completions that agree score 1.0
(self-consistency as a filter, as in label-free self-training).

Writes `train.jsonl` in the shape of `data` (the optimize method's, see `sil_stages.methods.base.DataShape`):
- prompt-completion: the kept completions (`keep`) as `{"prompt", "completion"}`, nothing else, so that
  SFTTrainer computes the loss on the completion only;
- preference: one `{"prompt", "chosen", "rejected"}` pair per prompt, its best completion over its worst when
  their scores differ by at least `pairs.min_margin` (TRL's preference format);
- prompt-only: one `{"prompt", "record"}` row per distinct prompt, `record` the prompt's record as JSON, for a
  method that generates and scores its own rollouts;
and `scored.jsonl` with every completion, its answer, score and whether it was used, for inspection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sil_stages.contract import Manifest, SelectConfig
from sil_stages.errors import StageInputError
from sil_stages.manifest import StageOutputs
from sil_stages.records import Record, read_jsonl, require_field, to_jsonl
from sil_stages.scoring import Vote, compile_pattern, extract_answer, majority_vote, make_verifier
from sil_stages.selection import Scored, keep, pair
from sil_stages.store import Store

log = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
SCORED_FILE = "scored.jsonl"


def _completions(record: Record, number: int, uri: str) -> list[str]:
    completions = record["completions"]
    if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
        raise StageInputError(f"samples_uri: record {number} of {uri}: `completions` is not a string list")
    return completions


def score_record(record: Record, number: int, config: SelectConfig, scorer: Any) -> list[dict[str, Any]]:
    """One scored row per completion of a record: answer, score and (majority vote) the pseudo-label."""
    prompt = str(record["prompt"])
    completions = _completions(record, number, config.samples_uri)
    pattern = compile_pattern(config.scorer.answer_pattern, field="scorer.answer_pattern")
    answers = [extract_answer(completion, pattern) for completion in completions]
    if config.scorer.type == "majority-vote":
        vote = majority_vote(answers)
        if vote.share < config.scorer.min_vote_share:
            vote = Vote(answer=None, share=vote.share, distinct=vote.distinct)
        return [
            {
                "prompt": prompt,
                "completion": completion,
                "answer": answer,
                "score": 1.0 if vote.answer is not None and answer == vote.answer else 0.0,
                "pseudo_label": vote.answer,
                "vote_share": vote.share,
            }
            for completion, answer in zip(completions, answers, strict=True)
        ]
    context = {k: v for k, v in record.items() if k != "completions"}
    return [
        {
            "prompt": prompt,
            "completion": completion,
            "answer": answer,
            "score": float(scorer(prompt, completion, context)),
        }
        for completion, answer in zip(completions, answers, strict=True)
    ]


def run(config: SelectConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.samples_uri, field="samples_uri")
    require_field(records, "prompt", uri=config.samples_uri, field="samples_uri")
    require_field(records, "completions", uri=config.samples_uri, field="samples_uri")
    scorer = None
    if config.scorer.type == "verifier":
        scorer = make_verifier(
            config.scorer.verifier,
            config.scorer.answer_pattern,
            field="scorer.verifier",
            pattern_field="scorer.answer_pattern",
        )

    scored_rows: list[dict[str, Any]] = []
    train: list[Record] = []
    seen: set[tuple[str, str]] = set()
    prompts_seen: set[str] = set()
    prompts_with_kept = 0
    vote_shares: list[float] = []
    for number, record in enumerate(records, start=1):
        rows = score_record(record, number, config, scorer)
        if rows and "vote_share" in rows[0]:
            vote_shares.append(float(rows[0]["vote_share"]))
        scored = [Scored(r["prompt"], r["completion"], r["score"]) for r in rows]
        used: list[Record]
        if config.data == "preference":
            best_over_worst = pair(scored, config.pairs.min_margin)
            used = []
            if best_over_worst is not None:
                used = [
                    {
                        "prompt": best_over_worst.prompt,
                        "chosen": best_over_worst.chosen,
                        "rejected": best_over_worst.rejected,
                    }
                ]
            kept_keys = (
                {(best_over_worst.prompt, c) for c in (best_over_worst.chosen, best_over_worst.rejected)}
                if best_over_worst
                else set()
            )
        elif config.data == "prompt-only":
            prompt = str(record["prompt"])
            context = {k: v for k, v in record.items() if k != "completions"}
            used = [] if prompt in prompts_seen else [{"prompt": prompt, "record": json.dumps(context)}]
            prompts_seen.add(prompt)
            kept_keys = set()
        else:
            kept = keep(scored, config.keep)
            if config.keep.dedupe:
                kept = [item for item in kept if (item.prompt, item.completion) not in seen]
                seen.update((item.prompt, item.completion) for item in kept)
            kept_keys = {(item.prompt, item.completion) for item in kept}
            used = [{"prompt": item.prompt, "completion": item.completion} for item in kept]
        for row in rows:
            row["kept"] = (row["prompt"], row["completion"]) in kept_keys
            kept_keys.discard((row["prompt"], row["completion"]))
        scored_rows.extend(rows)
        train.extend(used)
        prompts_with_kept += bool(used)

    outputs.write_text(TRAIN_FILE, to_jsonl(train))
    outputs.write_text(SCORED_FILE, to_jsonl(scored_rows))
    scores = [float(row["score"]) for row in scored_rows]
    metrics = {
        "scored": float(len(scores)),
        "kept": float(len(train)),
        "prompts": float(len(records)),
        "prompts_with_kept": float(prompts_with_kept),
        "mean_score": sum(scores) / len(scores) if scores else 0.0,
    }
    if vote_shares:
        metrics["mean_vote_share"] = sum(vote_shares) / len(vote_shares)
    log.info("wrote %d %s rows from %d completions", len(train), config.data, len(scores))
    return outputs.seal(stage="select", loop=config.loop, iteration=config.iteration, metrics=metrics)

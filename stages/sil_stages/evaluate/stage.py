"""evaluate: measure the candidate against the champion on held-out data, the numbers promotion gates read.

For each dataset (JSONL with `prompt` and `answer`) and each model:
- `score`: accuracy of greedy decoding;
- `self_consistency_score`: accuracy of the majority answer of `refinement.samples` samples at
  `refinement.temperature` (self-consistency@k, inference-time refinement without new weights);
- `distinct_answers`: mean number of distinct answers among those samples;
- `pass_at_k`: share of prompts with at least one correct sample (in `metrics` only; the same as pass@samples);
- inference refinement (`sil_stages.evaluate.refinement`), on the same samples: `pass_at_k{k}`, the unbiased pass@k of
  Chen et al. for each k of `refinement.pass_at_k` (default 1 and `samples`; flat metrics `<dataset>/<model>/
  pass_at_<k>`); with `refinement.best_of_n`, `best_of_n_score`, the accuracy of the sample the select scorer ranks
  first (an oracle equal to pass@samples when that scorer is the held-out verifier); and with
  `refinement.self_refine.rounds`, `self_refine_score{round}`, the accuracy after each greedy critique-and-revise
  round (flat metrics `<dataset>/<model>/self_refine_round_<r>`).

And the evaluation layer around those scores (see `significance`, `guards`):
- paired significance, per dataset: `delta` (candidate minus champion greedy accuracy on the same prompts), its
  bootstrap interval `delta_ci_low` / `delta_ci_high` and `p_value` (exact McNemar);
- collapse guards, per dataset and model, on the sampled generations (the greedy ones without refinement):
  `distinct_1`, `distinct_2`, `self_bleu`, `output_length` (characters, greedy; also for model `base`), and per
  dataset `output_length_drift` (candidate minus base); with the transformers engine, `token_entropy` (mean
  next-token entropy, nats, on one temperature-1 sample of the candidate per prompt, for both models) and
  `kl_candidate_champion` (mean over prompts of log p_candidate - log p_champion of that sample: a Monte Carlo
  estimate of KL(candidate || champion) per answer, in nats); and `selfimprove_acquire_*` diversity of this
  iteration's samples;
- reward-hacking guard, when the training scorer is not the held-out verifier: `proxy_score` (the sampled answers,
  else the greedy ones, judged by the training scorer as select judges them: for a majority vote, agreement with
  the prompt's majority answer), `proxy_agreement` with the held-out verifier on the same answers and `proxy_gap`
  = proxy_score minus the held-out accuracy of those same answers; and its trend across iterations, per dataset
  (see `gaptrend`): `proxy_gap_change` (the candidate's gap minus the previous iteration's candidate's) and
  `proxy_gap_growth_streak` (consecutive iterations, ending with this one, in which it grew);
- contamination, per dataset: the share of items whose prompt overlaps the selected training data
  (`contamination`, `contaminated_items`, and `contamination_max` over datasets, what the evaluate-contamination
  gate reads); the items are in results.json and named in the manifest's `findings` (`<dataset>/contaminated`:
  `<item number>: <prompt>`), which the Rejected event and the end-of-run table show.

Standard benchmarks (`harness`): a dataset entry with `harness` names lm-evaluation-harness tasks of a local folder;
they are checked before any model is loaded, run on each loaded model, and each task becomes a dataset of its own
(`dataset=<task>`): `score` per model and the paired `delta`, `delta_ci_low`, `delta_ci_high`, `p_value` of the
per-item values; results.json's `harness` says per task which metric and filter were compared.

Both models see the same sampling seed, so their difference is the weights, not the dice. When candidate and
champion are the same URI (iteration 1 before any training, or a no-op), the model is evaluated once.

Writes `results.json` and a manifest whose `series` are the labelled `selfimprove_eval_*` samples (what the
stage pushes to the Pushgateway named by `pushgateway`, and what local gates read) and whose `metrics` are
flat scalars, including `candidate_score` and `champion_score` (first dataset, greedy), `delta`,
`delta_ci_low`, `delta_ci_high`, `p_value`, `kl_candidate_champion`, `proxy_gap_change`, `proxy_gap_growth_streak`
and `candidate_<guard>` (first dataset) and
`contamination_max`, for tables. Before the candidate is measured, each of its files is checked (size and sha256)
against the optimize manifest, and the manifest's own sha256 is recorded as `verified_manifest_sha256`: a promotion
promotes only that checkpoint.

The stage is split by job: `inputs` (what it reads besides the models), `scoring` (one model on one dataset),
`measurement` (each model loaded once, scored on every dataset), `comparison` (the guards across models, per
dataset) and `series` (the series, flat metrics and findings). This module runs those steps in order, writes
`results.json`, pushes and seals the manifest.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sil_stages.core.contract import EvaluateConfig, Manifest
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.pushgateway import push_stage
from sil_stages.core.store import Store
from sil_stages.evaluate.comparison import DatasetGuards, dataset_guards, harness_guards
from sil_stages.evaluate.harness import HarnessSuite, prepare_suites
from sil_stages.evaluate.inputs import acquire_diversity, load_datasets
from sil_stages.evaluate.measurement import Measurement, base_output_lengths, measure_models
from sil_stages.evaluate.scoring import Scores, make_judges
from sil_stages.evaluate.series import findings_for, flat_metrics, series_for

RESULTS_FILE = "results.json"


def run(config: EvaluateConfig, store: Store) -> Manifest:
    """Score both models on every dataset, guard each dataset, write results.json, push the series, and seal the
    manifest last (no manifest: the stage did not finish)."""
    outputs = StageOutputs(store, config.output_uri)
    datasets = load_datasets(store, config.datasets)
    judges = make_judges(config, store)  # a bad verifier, pattern or pass@k fails before any model is loaded
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        suites = prepare_suites(store, config, scratch=Path(scratch))  # bad tasks fail before any model, too
        measured = measure_models(config, store, datasets, judges, suites)
    base_lengths = base_output_lengths(store, config, datasets, measured.runs)
    guards = {**dataset_guards(config, store, datasets, measured, base_lengths), **harness_guards(config, measured)}
    acquire = acquire_diversity(store, config)
    results = scores_by_dataset(measured, base_lengths)

    outputs.write_text(
        RESULTS_FILE, results_json(config, measured, results, guards, base_lengths, acquire, harness_of(suites))
    )
    series = series_for(config, results, guards, acquire)
    push_stage(config, series)  # before the manifest: a failed push fails the stage
    return outputs.seal(
        stage="evaluate",
        loop=config.loop,
        iteration=config.iteration,
        metrics=flat_metrics(results, guards, acquire),
        series=series,
        verified_manifest_sha256=measured.verified_manifest_sha256,
        findings=findings_for(guards),
    )


def scores_by_dataset(measured: Measurement, base_lengths: dict[str, float]) -> dict[str, dict[str, Scores]]:
    """dataset -> model -> its scores: candidate, champion, and `base` (output_length only) when a base is set."""
    results: dict[str, dict[str, Scores]] = {
        name: {model: model_run.scores for model, model_run in by_model.items()}
        for name, by_model in measured.runs.items()
    }
    for name, length in base_lengths.items():
        results[name]["base"] = Scores(score=float("nan"), output_length=length)
    for task, by_model_run in measured.harness.items():
        results[task] = {model: Scores(score=task_run.score) for model, task_run in by_model_run.items()}
    return results


def harness_of(suites: list[HarnessSuite]) -> dict[str, dict[str, Any]]:
    """results.json's record of each lm-eval task: the entry it came from and what was compared."""
    return {
        task.name: {
            "entry": suite.entry,
            "metric": task.metric,
            "filter": task.filter,
            "num_fewshot": suite.settings.num_fewshot,
            "limit": suite.settings.limit,
        }
        for suite in suites
        for task in suite.tasks
    }


def results_json(
    config: EvaluateConfig,
    measured: Measurement,
    results: dict[str, dict[str, Scores]],
    guards: dict[str, DatasetGuards],
    base_lengths: dict[str, float],
    acquire: dict[str, float],
    harness: dict[str, dict[str, Any]] | None = None,
) -> str:
    """results.json: every score, comparison and guard, the contaminated items in full, and per lm-eval task what
    was compared (its scores and comparison are under `datasets` and `comparison`, by task name)."""
    document: dict[str, Any] = {
        "candidate_uri": config.candidate_uri,
        "champion_uri": config.champion_uri,
        "same_model": measured.same_model,
        "datasets": {
            name: {m: asdict(s) for m, s in by_model.items() if m != "base"} for name, by_model in results.items()
        },
        "comparison": {name: asdict(guard.comparison) for name, guard in guards.items()},
        "guards": {
            name: {
                "kl_candidate_champion": guard.kl_candidate_champion,
                "output_length_drift": guard.output_length_drift,
                "base_output_length": base_lengths.get(name),
                "contamination": guard.contamination,
                "contaminated_items": [asdict(item) for item in guard.contaminated],
                "proxy_gap_trend": asdict(guard.proxy_gap_trend) if guard.proxy_gap_trend else None,
            }
            for name, guard in guards.items()
        },
        "acquire": acquire,
        "harness": harness or {},
    }
    return json.dumps(document, indent=2) + "\n"

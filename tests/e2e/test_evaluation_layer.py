"""The evaluation layer on real `sil run` loops: a guard gate rejects a collapsed candidate (also one whose point
score rose), and a label-free loop shows the gap between its training signal (the majority vote) and the held-out
truth.

One iteration each on the shrunk demo loop of test_local_loop (tiny model, ~100 prompts; the sharpening loop draws
the demo's 4000), so each takes well under two minutes on a laptop CPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_local_loop import EXAMPLE, HELDOUT_SCORE, SIL, base_model, small_loop

__all__ = ["base_model"]  # the session fixture, re-exported for this module's tests

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DISTINCT = 'selfimprove_eval_distinct_1{iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'


def _run_one_iteration(tmp_path: Path, base: Path, **spec: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    loop = small_loop(tmp_path, base, iterations=1)
    document = yaml.safe_load(loop.read_text())
    for key, value in spec.items():
        document["spec"][key] = {**document["spec"].get(key, {}), **value}
    loop.write_text(yaml.safe_dump(document, sort_keys=False))
    done = subprocess.run([*SIL, "run", str(loop)], cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    store = tmp_path / "store"
    status = json.loads((store / "status.json").read_text())
    manifest = json.loads((store / "iterations" / "1" / "evaluate" / "_manifest.json").read_text())
    return status, manifest, done.stdout


def _series(manifest: dict[str, Any], name: str, model: str | None = None) -> float:
    (value,) = [
        s["value"]
        for s in manifest["series"]
        if s["name"] == name
        and s["labels"].get("model") == model
        and s["labels"].get("dataset", "heldout") == "heldout"
    ]
    return float(value)


def test_an_optimize_that_destroys_diversity_is_rejected_by_the_diversity_gate(
    tmp_path: Path, base_model: Path
) -> None:
    """A learning rate of 1.0 (the largest the spec allows) wrecks the model: its samples repeat themselves. The gate
    on distinct-1 alone rejects it; the Rejected event and the table say why. (Measured: distinct-1 0.01 vs 0.21,
    self-BLEU 0.995 vs 0.795, KL 34 nats; its accuracy falls too, 0.0 vs 0.545, so this loop does not show a
    collapse that a point-score gate would miss.)"""
    status, manifest, stdout = _run_one_iteration(
        tmp_path,
        base_model,
        optimize={"hyperparameters": {"learningRate": 1.0, "epochs": 2, "batchSize": 32, "maxLength": 16}},
        promotion={
            "gates": [{"name": "diversity-holds", "query": DISTINCT, "successCondition": "result >= 0.8 * champion"}]
        },
    )
    (iteration,) = status["iterations"]
    (gate,) = iteration["gates"]
    candidate = _series(manifest, "selfimprove_eval_distinct_1", "candidate")
    champion = _series(manifest, "selfimprove_eval_distinct_1", "champion")
    scores = f"score {iteration['candidateScore']} vs {iteration['championScore']}"
    assert (iteration["decision"], gate["phase"]) == ("Rejected", "Failed"), f"distinct-1 {candidate} vs {champion}"
    assert candidate < 0.8 * champion, scores
    assert _series(manifest, "selfimprove_eval_self_bleu", "candidate") > _series(
        manifest, "selfimprove_eval_self_bleu", "champion"
    )
    assert _series(manifest, "selfimprove_eval_kl_candidate_champion") > 0.5, "the weights moved far"
    assert "why:" in stdout and "candidate - champion" in stdout


DISTINCT_ANSWERS = 'selfimprove_eval_distinct_answers{iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'
SHARPENING = {
    # The demo's first iteration (4000 prompts, 4 samples each), then SFT for 8 epochs on one kept correct completion
    # per prompt: greedy accuracy rises, and the sampling distribution sharpens onto one answer per prompt.
    "acquire": {
        "prompts": {"uri": str(EXAMPLE / "data" / "train_prompts.jsonl"), "perIteration": 4000},
        "samplesPerPrompt": 4,
        "batchSize": 256,
        "sampling": {"temperature": 1.0, "maxNewTokens": 8},
    },
    "select": {"keep": {"minScore": 1.0, "topK": 1}},
    "optimize": {
        "hyperparameters": {"learningRate": 1.0e-3, "warmupRatio": 0.1, "epochs": 8, "batchSize": 32, "maxLength": 32}
    },
    "evaluate": {"maxNewTokens": 8, "refinement": {"method": "self-consistency", "samples": 8, "temperature": 0.7}},
}


def test_a_collapse_of_sampled_diversity_is_rejected_by_the_guard_gate_while_the_point_gate_passes(
    tmp_path: Path, base_model: Path
) -> None:
    """Training many epochs on the model's own kept answers collapses its sampling distribution: per prompt, its 8
    samples at temperature 0.7 hold less than half as many distinct answers as the champion's, while its greedy
    accuracy rises. The point gate alone would promote it; the guard gate on distinct answers rejects it. (Measured:
    greedy 0.865 vs 0.545; distinct answers 2.05 vs 4.48; token entropy 0.44 vs 1.00 nats.)"""
    gates = [
        {"name": "heldout-improves", "query": HELDOUT_SCORE, "successCondition": "result > champion"},
        {"name": "diversity-holds", "query": DISTINCT_ANSWERS, "successCondition": "result >= 0.8 * champion"},
    ]
    status, manifest, stdout = _run_one_iteration(tmp_path, base_model, **SHARPENING, promotion={"gates": gates})
    (iteration,) = status["iterations"]
    phases = {gate["name"]: gate["phase"] for gate in iteration["gates"]}
    candidate = _series(manifest, "selfimprove_eval_distinct_answers", "candidate")
    champion = _series(manifest, "selfimprove_eval_distinct_answers", "champion")
    scores = f"score {iteration['candidateScore']} vs {iteration['championScore']}"
    assert iteration["candidateScore"] >= iteration["championScore"], f"the point score is not lower: {scores}"
    assert phases == {"heldout-improves": "Successful", "diversity-holds": "Failed"}, (
        f"{scores}; distinct answers {candidate} vs {champion}"
    )
    assert iteration["decision"] == "Rejected"
    assert candidate < 0.8 * champion
    assert _series(manifest, "selfimprove_eval_token_entropy", "candidate") < _series(
        manifest, "selfimprove_eval_token_entropy", "champion"
    ), "the next-token distribution sharpened too"
    assert "rejected (diversity-holds Failed)" in stdout, stdout


def test_a_majority_vote_loop_shows_the_gap_between_its_pseudo_labels_and_the_truth(
    tmp_path: Path, base_model: Path
) -> None:
    """On this base model the majority answer is often wrong (examples/arithmetic-majority): judged by the vote, the
    held-out answers look far better than they are. evaluate measures that gap for both models."""
    status, manifest, _ = _run_one_iteration(
        tmp_path,
        base_model,
        acquire={"samplesPerPrompt": 4},
        select={"scorer": {"type": "majority-vote"}, "keep": {"minScore": 1.0, "topK": 2}},
    )
    for model in ("candidate", "champion"):
        proxy = _series(manifest, "selfimprove_eval_proxy_score", model)
        gap = _series(manifest, "selfimprove_eval_proxy_gap", model)
        assert gap > 0.1, (
            f"{model}: the vote calls {proxy:.2f} of the sampled answers right, the truth {proxy - gap:.2f}"
        )
        assert _series(manifest, "selfimprove_eval_proxy_agreement", model) < 0.9
    assert status["iterations"][0]["decision"] in ("Promoted", "Rejected")


def test_evaluation_items_in_the_training_data_fail_the_contamination_gate_which_names_them(
    tmp_path: Path, base_model: Path
) -> None:
    """The loop trains on 48 prompts that are also in its evaluation set: evaluate.contamination.maxOverlap 0 rejects
    the iteration, and the manifest, the status, the Rejected event and the end-of-run table name the items."""
    train = [json.loads(line) for line in (EXAMPLE / "data" / "train_prompts.jsonl").read_text().splitlines()[:48]]
    heldout = [json.loads(line) for line in (EXAMPLE / "data" / "heldout.jsonl").read_text().splitlines()[:40]]
    leaked = [{"prompt": r["prompt"], "answer": str(sum(map(int, r["prompt"].rstrip("=").split("+"))))} for r in train]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout + leaked))
    status, manifest, stdout = _run_one_iteration(
        tmp_path,
        base_model,
        acquire={"prompts": {"uri": str(tmp_path / "prompts.jsonl"), "perIteration": 48}},
        evaluate={
            "datasets": [{"name": "heldout", "uri": str(tmp_path / "eval.jsonl")}],
            "contamination": {"maxOverlap": 0},
        },
    )
    (iteration,) = status["iterations"]
    gates = {gate["name"]: gate["phase"] for gate in iteration["gates"]}
    assert (iteration["decision"], gates["evaluate-contamination"]) == ("Rejected", "Failed")
    named = manifest["findings"]["heldout/contaminated"]
    leaked_items = {f"{40 + n}: {r['prompt']}" for n, r in enumerate(train, start=1)}
    assert named and set(named) <= leaked_items, named
    (evaluate,) = [stage for stage in iteration["stages"] if stage["stage"] == "evaluate"]
    assert evaluate["findings"] == manifest["findings"]
    assert f"(items {named[0]}" in " ".join(stdout.split()), "the Rejected event and the table name them: " + stdout


HARNESS_EXAMPLE = EXAMPLE.parent / "arithmetic-harness"
NO_REGRESSION = 'selfimprove_eval_delta_ci_high{iteration="{{iteration}}",dataset="sums-mc"}'


def test_a_standard_benchmark_task_is_a_no_regression_gate_over_its_paired_interval(
    tmp_path: Path, base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's lm-evaluation-harness task (local YAML and JSONL, nothing downloaded) runs on both models in
    evaluate; its paired interval is a series like the heldout dataset's, and the gate reads it. A threshold no
    interval can reach (above 1) fails the gate and rejects the iteration: the gate really reads the task's series."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    harness = {"tasks": ["sums-mc"], "includePath": str(HARNESS_EXAMPLE / "tasks"), "limit": 40}
    status, manifest, stdout = _run_one_iteration(
        tmp_path,
        base_model,
        evaluate={
            "datasets": [
                {"name": "heldout", "uri": str(EXAMPLE / "data" / "heldout.jsonl")},
                {"name": "general", "harness": harness},
            ]
        },
        promotion={
            "gates": [
                {"name": "sums-mc-holds", "query": NO_REGRESSION, "successCondition": "result >= -0.05"},
                {"name": "sums-mc-impossible", "query": NO_REGRESSION, "successCondition": "result > 1"},
            ]
        },
    )
    task = {
        (s["name"], s["labels"].get("model")): s["value"]
        for s in manifest["series"]
        if s["labels"].get("dataset") == "sums-mc"
    }
    candidate, champion = task[("selfimprove_eval_score", "candidate")], task[("selfimprove_eval_score", "champion")]
    assert task[("selfimprove_eval_delta", None)] == pytest.approx(candidate - champion)
    assert task[("selfimprove_eval_delta_ci_low", None)] <= task[("selfimprove_eval_delta_ci_high", None)]
    assert 0.0 <= champion <= 1.0 and 0.0 < task[("selfimprove_eval_p_value", None)] <= 1.0
    (iteration,) = status["iterations"]
    phases = {gate["name"]: gate["phase"] for gate in iteration["gates"]}
    high = task[("selfimprove_eval_delta_ci_high", None)]
    assert phases["sums-mc-impossible"] == "Failed" and iteration["decision"] == "Rejected", stdout
    assert phases["sums-mc-holds"] == ("Successful" if high >= -0.05 else "Failed"), f"ci_high {high}"

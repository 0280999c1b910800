"""The model stages end to end on a tiny model: what acquire, optimize and evaluate leave in the store.

Each test runs a stage through `sil_stages.cli.main`, the same entry point as `python -m sil_stages`, and
checks the contract: outputs, then a manifest with sizes, sha256 and metrics; a rerun is a no-op; a stage
killed before its manifest leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

PROMPTS = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "source": "test"} for a, b in [(1, 2), (3, 4), (5, 6)]]


def _run(stage: str, config: dict[str, Any]) -> int:
    return main([stage, "--config", json.dumps(config)])


def _manifest(config: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((output_dir(config) / "_manifest.json").read_text())
    return manifest


def _acquire_config(tmp_path: Path, stage_config: StageConfig, tiny_model: Path, **fields: Any) -> dict[str, Any]:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS).as_uri()
    return stage_config(
        "acquire",
        model_uri=tiny_model.as_uri(),
        prompts_uri=prompts,
        samples_per_prompt=3,
        sampling={"temperature": 1.0, "max_new_tokens": 4},
        batch_size=2,
        **fields,
    )


def test_acquire_writes_k_samples_per_prompt_and_carries_fields(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    config = _acquire_config(tmp_path, stage_config, tiny_model)
    assert _run("acquire", config) == 0
    samples = read_jsonl(output_dir(config) / "samples.jsonl")
    assert [s["prompt"] for s in samples] == [p["prompt"] for p in PROMPTS]
    assert all(len(s["completions"]) == 3 for s in samples)
    assert all(s["answer"] and s["source"] == "test" for s in samples)
    manifest = _manifest(config)
    assert {k: manifest["metrics"][k] for k in ("prompts", "samples", "prompts_from_file")} == {
        "prompts": 3.0,
        "samples": 9.0,
        "prompts_from_file": 3.0,
    }
    (entry,) = manifest["files"]
    data = (output_dir(config) / "samples.jsonl").read_bytes()
    assert entry == {"path": "samples.jsonl", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_acquire_draws_per_iteration_prompts_reproducibly(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """The same seed and iteration give the same draw and the same samples: reruns after a crash agree."""
    first = _acquire_config(tmp_path, stage_config, tiny_model, per_iteration=2)
    second = {**first, "output_uri": first["output_uri"] + "-again"}
    assert _run("acquire", first) == 0
    assert _run("acquire", second) == 0
    samples = read_jsonl(output_dir(first) / "samples.jsonl")
    assert len(samples) == 2
    assert samples == read_jsonl(output_dir(second) / "samples.jsonl")


def test_second_run_of_a_finished_stage_is_a_no_op(tmp_path: Path, stage_config: StageConfig, tiny_model: Path) -> None:
    config = _acquire_config(tmp_path, stage_config, tiny_model)
    assert _run("acquire", config) == 0
    manifest = output_dir(config) / "_manifest.json"
    before = manifest.stat().st_mtime_ns
    assert _run("acquire", config) == 0
    assert manifest.stat().st_mtime_ns == before


def test_stage_killed_before_its_manifest_leaves_no_manifest_and_reruns(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """SIGKILL right before the manifest write: outputs may exist, the stage still counts as not finished."""
    config = _acquire_config(tmp_path, stage_config, tiny_model)
    script = (
        "import os, signal, sys\n"
        "from sil_stages.core import manifest\n"
        "manifest.StageOutputs.seal = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from sil_stages.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [sys.executable, "-c", script, "acquire", "--config", json.dumps(config)]
    result = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy(), check=False)
    assert result.returncode == -signal.SIGKILL
    assert (output_dir(config) / "samples.jsonl").exists()
    assert not (output_dir(config) / "_manifest.json").exists()
    assert _run("acquire", config) == 0
    assert (output_dir(config) / "_manifest.json").exists()


def test_optimize_trains_with_trl_changes_parameters_and_saves_safetensors(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": p["prompt"], "completion": p["answer"]} for p in PROMPTS * 4]
    )
    config = stage_config(
        "optimize",
        train_uri=train.as_uri(),
        init_model_uri=tiny_model.as_uri(),
        hyperparameters={"learning_rate": 1e-2, "epochs": 2, "batch_size": 4, "max_length": 16},
    )
    assert _run("optimize", config) == 0
    metrics = _manifest(config)["metrics"]
    assert metrics["train_examples"] == 12
    assert metrics["steps"] == 6
    assert metrics["train_loss"] > 0
    assert metrics["param_delta_l2"] > 0
    checkpoint = output_dir(config) / "checkpoint"
    assert (checkpoint / "model.safetensors").exists()
    assert (checkpoint / "tokenizer.json").exists()
    paths = {entry["path"] for entry in _manifest(config)["files"]}
    assert {"checkpoint/model.safetensors", "checkpoint/config.json"} <= paths


def test_optimize_on_empty_data_copies_the_init_model(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """Nothing kept is not a failure: the checkpoint is the init model and the gate will reject it."""
    train = tmp_path / "train.jsonl"
    train.write_text("")
    config = stage_config("optimize", train_uri=train.as_uri(), init_model_uri=tiny_model.as_uri())
    assert _run("optimize", config) == 0
    assert _manifest(config)["metrics"] == {
        "train_examples": 0.0,
        "steps": 0.0,
        "param_delta_l2": 0.0,
        "world_size": 1.0,
    }
    assert (output_dir(config) / "checkpoint" / "model.safetensors").exists()


PER_MODEL = (
    "score",
    "self_consistency_score",
    "distinct_answers",
    "pass_at_k",  # by default pass@1 and pass@samples, one series each (label k)
    "distinct_1",
    "distinct_2",
    "self_bleu",
    "output_length",
    "token_entropy",
)
PER_DATASET = ("delta", "delta_ci_low", "delta_ci_high", "p_value", "kl_candidate_champion", "output_length_drift")


def _series(manifest: dict[str, Any]) -> dict[tuple[str, str | None], float]:
    return {(s["name"], s["labels"].get("model")): s["value"] for s in manifest["series"]}


def test_evaluate_writes_labelled_series_for_candidate_and_champion(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    heldout = write_jsonl(tmp_path / "heldout.jsonl", PROMPTS).as_uri()
    config = stage_config(
        "evaluate",
        candidate_uri=tiny_model.as_uri(),
        champion_uri=tiny_model.as_uri(),
        base_uri=tiny_model.as_uri(),
        datasets=[{"name": "heldout", "uri": heldout}],
        refinement={"samples": 3, "temperature": 1.0},
        max_new_tokens=4,
    )
    assert _run("evaluate", config) == 0
    manifest = _manifest(config)
    series = _series(manifest)
    assert set(series) == {
        (f"selfimprove_eval_{metric}", model) for metric in PER_MODEL for model in ("candidate", "champion")
    } | {("selfimprove_eval_output_length", "base")} | {(f"selfimprove_eval_{metric}", None) for metric in PER_DATASET}
    labels = manifest["series"][0]["labels"]
    assert labels == {**labels, "namespace": "test-ns", "loop": "test-loop", "iteration": "1", "dataset": "heldout"}
    metrics = manifest["metrics"]
    assert metrics["candidate_score"] == metrics["champion_score"]
    assert 0.0 <= metrics["heldout/candidate/score"] <= 1.0
    assert 1.0 <= metrics["heldout/champion/distinct_answers"] <= 3.0 or metrics["heldout/champion/pass_at_k"] == 0
    # One model against itself: no difference, an interval that is the point 0, nothing drifted.
    assert (metrics["delta"], metrics["delta_ci_low"], metrics["delta_ci_high"], metrics["p_value"]) == (0, 0, 0, 1)
    assert series[("selfimprove_eval_kl_candidate_champion", None)] == 0.0
    assert series[("selfimprove_eval_output_length_drift", None)] == 0.0
    assert series[("selfimprove_eval_token_entropy", "candidate")] > 0.0
    results = json.loads((output_dir(config) / "results.json").read_text())
    assert results["same_model"] is True


def _perturbed_copy(tiny_model: Path, directory: Path) -> Path:
    """Another model with the same tokenizer: the tiny model with noise added to every weight."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(directory)
    return directory


def test_evaluate_reports_significance_guards_proxy_and_contamination_for_two_models(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    champion = _perturbed_copy(tiny_model, tmp_path / "champion")
    heldout = write_jsonl(tmp_path / "heldout.jsonl", PROMPTS).as_uri()
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "3+4=", "completion": "7"}]).as_uri()
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"prompt": "1+2=", "completions": ["3", "3", "3"]}]).as_uri()
    config = stage_config(
        "evaluate",
        candidate_uri=tiny_model.as_uri(),
        champion_uri=champion.as_uri(),
        base_uri=champion.as_uri(),
        samples_uri=samples,
        train_uri=train,
        training_scorer={"type": "majority-vote"},
        datasets=[{"name": "heldout", "uri": heldout}],
        refinement={"samples": 3, "temperature": 1.0},
        significance={"resamples": 200},
        max_new_tokens=4,
    )
    assert _run("evaluate", config) == 0
    manifest = _manifest(config)
    series = _series(manifest)
    metrics = manifest["metrics"]
    assert metrics["delta"] == pytest.approx(metrics["candidate_score"] - metrics["champion_score"])
    assert metrics["delta_ci_low"] <= metrics["delta"] <= metrics["delta_ci_high"]
    for model in ("candidate", "champion"):
        proxy = series[("selfimprove_eval_proxy_score", model)]
        assert -1.0 <= series[("selfimprove_eval_proxy_gap", model)] <= proxy
        assert 0.0 <= series[("selfimprove_eval_proxy_agreement", model)] <= 1.0
    assert ("selfimprove_eval_kl_candidate_champion", None) in series
    assert series[("selfimprove_eval_token_entropy", "champion")] > 0.0
    # The training data holds the second held-out prompt: 1 of 3 items, named in the manifest's findings.
    assert series[("selfimprove_eval_contamination", None)] == pytest.approx(1 / 3)
    assert series[("selfimprove_eval_contamination_max", None)] == pytest.approx(1 / 3)
    assert manifest["findings"] == {"heldout/contaminated": ["2: 3+4="]}
    assert not [key for key in metrics if "/contaminated/" in key], "metrics stay scalars, not item names"
    # The first iteration has no previous gap: a streak of 0 and no change.
    assert series[("selfimprove_eval_proxy_gap_growth_streak", None)] == 0
    assert ("selfimprove_eval_proxy_gap_change", None) not in series
    # The acquire samples are one answer repeated: no diversity.
    assert series[("selfimprove_acquire_distinct_1", None)] == pytest.approx(1 / 3)
    assert series[("selfimprove_acquire_self_bleu", None)] == pytest.approx(1.0)
    results = json.loads((output_dir(config) / "results.json").read_text())
    assert results["guards"]["heldout"]["contaminated_items"] == [{"item": 2, "prompt": "3+4="}]


def test_evaluate_reports_the_proxy_gaps_change_since_the_previous_iteration_and_its_growth_streak(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """Iteration 2 reads iteration 1's evaluate manifest from the store: there the candidate's gap was -1 (the
    lowest a gap can be) after growing once, so any larger gap now is a second iteration of growth."""
    heldout = write_jsonl(tmp_path / "heldout.jsonl", PROMPTS).as_uri()
    config = stage_config(
        "evaluate",
        iteration=2,
        candidate_uri=tiny_model.as_uri(),
        champion_uri=tiny_model.as_uri(),
        training_scorer={"type": "majority-vote"},
        datasets=[{"name": "heldout", "uri": heldout}],
        refinement={"samples": 3, "temperature": 1.0},
        significance={"resamples": 200},
        max_new_tokens=4,
    )
    previous = output_dir(config).parent.parent / "1" / "evaluate" / "_manifest.json"
    previous.parent.mkdir(parents=True)
    labels = {"namespace": "test-ns", "loop": "test-loop", "iteration": "1", "dataset": "heldout"}
    previous.write_text(
        json.dumps(
            {
                "stage": "evaluate",
                "iteration": 1,
                "loop": "test-loop",
                "series": [
                    {"name": "selfimprove_eval_proxy_gap", "labels": {**labels, "model": "candidate"}, "value": -1.0},
                    {"name": "selfimprove_eval_proxy_gap_growth_streak", "labels": labels, "value": 1},
                ],
                "started_at": "2026-12-01T00:00:00Z",
                "finished_at": "2026-12-01T00:00:01Z",
                "duration_seconds": 1.0,
            }
        )
    )
    assert _run("evaluate", config) == 0
    manifest = _manifest(config)
    series = _series(manifest)
    gap = series[("selfimprove_eval_proxy_gap", "candidate")]
    change = series[("selfimprove_eval_proxy_gap_change", None)]
    assert change == pytest.approx(gap + 1.0)
    assert series[("selfimprove_eval_proxy_gap_growth_streak", None)] == (2 if change > 0 else 0)
    assert manifest["metrics"]["proxy_gap_change"] == pytest.approx(change)
    assert manifest["metrics"]["proxy_gap_growth_streak"] == series[("selfimprove_eval_proxy_gap_growth_streak", None)]
    assert manifest["findings"] == {}, "no training data, nothing named"


def test_vllm_engine_generates_n_completions_per_prompt(tiny_model: Path) -> None:
    """Runs only where vLLM is installed (GPU stage image); elsewhere it is reported skipped."""
    pytest.importorskip("vllm", reason="vllm is not installed: the vLLM engine runs only in the GPU image")
    from sil_stages.core.generation import SamplingRequest
    from sil_stages.core.vllm_engine import VllmEngine

    engine = VllmEngine(str(tiny_model))
    outputs = engine.generate(["1+2=", "3+4="], SamplingRequest(n=3, max_new_tokens=4))
    assert [len(completions) for completions in outputs] == [3, 3]


def test_evaluate_with_an_unreachable_pushgateway_fails_without_a_manifest(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """Gates read the pushed series: a lost push must fail the stage (exit 1, retried), not finish silently."""
    heldout = write_jsonl(tmp_path / "heldout.jsonl", PROMPTS).as_uri()
    config = stage_config(
        "evaluate",
        candidate_uri=tiny_model.as_uri(),
        champion_uri=tiny_model.as_uri(),
        datasets=[{"name": "heldout", "uri": heldout}],
        refinement={"method": "none"},
        max_new_tokens=2,
        pushgateway="http://127.0.0.1:9",
    )
    assert _run("evaluate", config) == 1
    assert not (output_dir(config) / "_manifest.json").exists()

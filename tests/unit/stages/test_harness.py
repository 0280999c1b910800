"""lm-evaluation-harness tasks as evaluation datasets (sil_stages.evaluate.harness): which metrics can be paired,
how lm-eval's per-sample logs become paired per-item values and their interval, and the task checks that run
before any model is loaded (on the task YAMLs of testdata/harness, offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.store import Store
from sil_stages.evaluate.harness import (
    TaskRun,
    comparability_problem,
    paired_values,
    per_item_values,
    prepare_suites,
)
from sil_stages.evaluate.significance import compare, mcnemar_exact
from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl
from tests.unit.stages.test_stages_with_model import _perturbed_copy

TASKS = Path(__file__).parent / "testdata" / "harness"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may be downloaded: every test here runs with the hub and the datasets library offline."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("metric", "aggregation", "higher_is_better", "refused_because"),
    [
        ("acc", "mean", True, None),
        ("exact_match", "mean", True, None),
        ("bleu", "bleu", True, "not mean"),
        ("word_perplexity", "weighted_perplexity", False, "not mean"),
        ("mcc", "matthews_corrcoef", True, "not mean"),
        ("error_rate", "mean", False, "not higher-is-better"),
        ("unknown_direction", "mean", None, "not higher-is-better"),
    ],
)
def test_only_per_item_means_that_are_better_higher_can_be_paired(
    metric: str, aggregation: str, higher_is_better: bool | None, refused_because: str | None
) -> None:
    problem = comparability_problem(metric, aggregation, higher_is_better)
    if refused_because is None:
        assert problem is None
    else:
        assert problem is not None and refused_because in problem and metric in problem


def _sample(doc_id: int, value: float, filter_name: str = "none") -> dict[str, Any]:
    return {"doc_id": doc_id, "filter": filter_name, "acc": value, "doc": {}, "resps": []}


def test_per_item_values_come_from_the_compared_filters_records_by_doc_id() -> None:
    samples = [_sample(1, 1.0), _sample(0, 0.0), _sample(0, 1.0, "strict"), _sample(1, 0.0, "strict")]
    assert per_item_values(samples, "acc", "none") == {0: 0.0, 1: 1.0}
    assert per_item_values(samples, "acc", "strict") == {0: 1.0, 1: 0.0}


@pytest.mark.parametrize(
    ("samples", "says"),
    [
        ([_sample(0, 1.0), _sample(0, 0.0)], "item 0 twice"),
        ([{"doc_id": 3, "filter": "none"}], "item 3 has no acc"),
        ([_sample(2, float("nan"))], "item 2 has acc = nan"),
    ],
)
def test_a_per_sample_log_that_cannot_be_paired_is_an_error(samples: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        per_item_values(samples, "acc", "none")


def test_pairing_orders_both_models_by_item_whatever_the_logs_order() -> None:
    candidate = TaskRun(score=0.5, per_item={2: 1.0, 0: 0.0, 1: 1.0})
    champion = TaskRun(score=0.5, per_item={0: 1.0, 1: 1.0, 2: 0.0})
    assert paired_values(candidate, champion, task="t") == ([0.0, 1.0, 1.0], [1.0, 1.0, 0.0])


def test_models_scored_on_different_items_cannot_be_paired() -> None:
    candidate = TaskRun(score=1.0, per_item={0: 1.0, 1: 1.0})
    champion = TaskRun(score=1.0, per_item={0: 1.0, 2: 1.0})
    with pytest.raises(ValueError, match="different items"):
        paired_values(candidate, champion, task="t")


def test_crafted_logs_give_the_paired_difference_its_interval_and_mcnemar() -> None:
    """40 items: the candidate alone right on 8, the champion alone right on 2, both right on 20, both wrong on 10."""
    outcomes = [(1.0, 0.0)] * 8 + [(0.0, 1.0)] * 2 + [(1.0, 1.0)] * 20 + [(0.0, 0.0)] * 10
    candidate_log = [_sample(i, c) for i, (c, _) in enumerate(outcomes)]
    champion_log = [_sample(i, h) for i, (_, h) in reversed(list(enumerate(outcomes)))]
    candidate = TaskRun(score=28 / 40, per_item=per_item_values(candidate_log, "acc", "none"))
    champion = TaskRun(score=22 / 40, per_item=per_item_values(champion_log, "acc", "none"))
    comparison = compare(*paired_values(candidate, champion, task="t"), seed=7, resamples=2000)
    assert comparison.delta == pytest.approx(6 / 40)
    assert (comparison.candidate_only, comparison.champion_only, comparison.prompts) == (8, 2, 40)
    assert comparison.p_value == pytest.approx(mcnemar_exact(8, 2)) and comparison.p_value == pytest.approx(
        2 * (1 + 10 + 45) / 2**10
    )
    assert comparison.ci_low < comparison.delta < comparison.ci_high
    # Paired by doc_id, the shuffled logs give exactly the comparison of the outcomes in item order.
    direct = compare([c for c, _ in outcomes], [h for _, h in outcomes], seed=7, resamples=2000)
    assert comparison == direct


def _config(tmp_path: Path, *datasets: dict[str, Any]) -> EvaluateConfig:
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text('{"prompt": "1+2=", "answer": "3"}\n')
    return EvaluateConfig.model_validate(
        {
            "loop": "l",
            "iteration": 1,
            "storage": {"uri": (tmp_path / "store").as_uri()},
            "output_uri": (tmp_path / "store" / "out").as_uri(),
            "candidate_uri": "file:///m",
            "champion_uri": "file:///m",
            "datasets": [{"name": "heldout", "uri": heldout.as_uri()}, *datasets],
        }
    )


def _harness(tasks: list[str], include: Path = TASKS, **settings: Any) -> dict[str, Any]:
    return {"name": "general", "harness": {"tasks": tasks, "includePath": include.as_uri(), **settings}}


def _prepare(tmp_path: Path, *datasets: dict[str, Any]) -> Any:
    config = _config(tmp_path, *datasets)
    return prepare_suites(Store(config.storage), config, scratch=tmp_path)


def test_a_local_task_is_loaded_offline_with_its_metric_and_filter(tmp_path: Path) -> None:
    (suite,) = _prepare(tmp_path, _harness(["tiny-arith"]))
    assert suite.entry == "general" and suite.folder == TASKS
    assert [(t.name, t.metric, t.filter) for t in suite.tasks] == [("tiny-arith", "acc", "none")]


@pytest.mark.parametrize(
    ("dataset", "field", "says"),
    [
        (_harness(["tiny-arith", "arc_easy"]), "datasets[1].harness.tasks[1]", "no task arc_easy in includePath"),
        (_harness(["tiny-group"]), "datasets[1].harness.tasks[0]", "is a group"),
        (_harness(["tiny-bleu"]), "datasets[1].harness.tasks[0]", "aggregates by bleu, not mean"),
        (_harness(["tiny-hub"]), "datasets[1].harness.tasks[0]", "only local files are read"),
        (_harness(["tiny-arith"], metric="f1"), "datasets[1].harness.tasks[0]", "has no metric 'f1'"),
        (_harness(["tiny-arith"], TASKS / "missing"), "datasets[1].harness.includePath", "no such folder"),
        (_harness(["tiny-arith", "tiny-arith"]), "datasets[1].harness.tasks", "named twice"),
    ],
)
def test_bad_tasks_are_refused_before_any_model_naming_the_field(
    tmp_path: Path, dataset: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(StageInputError) as raised:
        _prepare(tmp_path, dataset)
    assert str(raised.value).startswith(field + ":") and says in str(raised.value)


def test_a_task_named_like_another_dataset_is_refused(tmp_path: Path) -> None:
    heldout = tmp_path / "other.jsonl"
    heldout.write_text('{"prompt": "1+2=", "answer": "3"}\n')
    with pytest.raises(StageInputError, match=r"datasets\[2\]\.harness\.tasks\[0\]: tiny-arith is also datasets\[1\]"):
        _prepare(tmp_path, {"name": "tiny-arith", "uri": heldout.as_uri()}, _harness(["tiny-arith"]))


@pytest.mark.slow
def test_evaluate_runs_a_local_harness_task_on_both_models_and_gates_it_like_a_dataset(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """A real lm-eval run on two tiny models, offline: per-task score series for both models, and the paired
    difference of the per-item values with its interval and McNemar p-value, labelled dataset=<task>."""
    champion = _perturbed_copy(tiny_model, tmp_path / "champion")
    heldout = write_jsonl(tmp_path / "heldout.jsonl", [{"prompt": "1+2=", "answer": "3"}]).as_uri()
    config = stage_config(
        "evaluate",
        candidate_uri=tiny_model.as_uri(),
        champion_uri=champion.as_uri(),
        datasets=[{"name": "heldout", "uri": heldout}, _harness(["tiny-arith"], limit=20)],
        refinement={"method": "none", "samples": 1},
        significance={"resamples": 200},
        max_new_tokens=2,
        batch_size=8,
    )
    assert main(["evaluate", "--config", json.dumps(config)]) == 0
    manifest = json.loads((output_dir(config) / "_manifest.json").read_text())
    task_series = {
        (s["name"], s["labels"].get("model")): s["value"]
        for s in manifest["series"]
        if s["labels"].get("dataset") == "tiny-arith"
    }
    candidate = task_series[("selfimprove_eval_score", "candidate")]
    champion_score = task_series[("selfimprove_eval_score", "champion")]
    assert task_series[("selfimprove_eval_delta", None)] == pytest.approx(candidate - champion_score)
    assert task_series[("selfimprove_eval_delta_ci_low", None)] <= task_series[("selfimprove_eval_delta", None)]
    assert task_series[("selfimprove_eval_delta", None)] <= task_series[("selfimprove_eval_delta_ci_high", None)]
    assert 0.0 < task_series[("selfimprove_eval_p_value", None)] <= 1.0
    assert manifest["metrics"]["tiny-arith/candidate/score"] == candidate
    results = json.loads((output_dir(config) / "results.json").read_text())
    assert results["comparison"]["tiny-arith"]["prompts"] == 20  # limit: the first 20 of 24 items
    assert results["harness"]["tiny-arith"] == {
        "entry": "general",
        "metric": "acc",
        "filter": "none",
        "num_fewshot": None,
        "limit": 20,
    }
    # The JSONL dataset stays the primary one.
    assert manifest["metrics"]["candidate_score"] == manifest["metrics"]["heldout/candidate/score"]


@pytest.mark.slow
def test_harness_scores_equal_lm_evals_own_run_of_the_same_model(tiny_model: Path, tmp_path: Path) -> None:
    """The per-item values evaluate pairs average to the score lm-eval reports for the task."""
    from sil_stages.core.models import load_model, load_tokenizer
    from sil_stages.evaluate.harness import run_suite

    (suite,) = _prepare(tmp_path, _harness(["tiny-arith"], numFewshot=1))
    (run,) = run_suite(
        suite, load_model(str(tiny_model)), load_tokenizer(str(tiny_model)), batch_size=4, seed=3
    ).values()
    assert len(run.per_item) == 24
    assert run.score == pytest.approx(sum(run.per_item.values()) / 24)
    assert set(run.per_item.values()) <= {0.0, 1.0}


@pytest.mark.slow
def test_a_generation_task_is_paired_by_its_exact_match_per_item(tiny_model: Path, tmp_path: Path) -> None:
    """generate_until with exact_match: each item's value is 0 or 1, and they average to lm-eval's score."""
    from sil_stages.core.models import load_model, load_tokenizer
    from sil_stages.evaluate.harness import run_suite

    (suite,) = _prepare(tmp_path, _harness(["tiny-sums-gen"], limit=6))
    assert [(t.name, t.metric, t.filter) for t in suite.tasks] == [("tiny-sums-gen", "exact_match", "none")]
    (run,) = run_suite(
        suite, load_model(str(tiny_model)), load_tokenizer(str(tiny_model)), batch_size=4, seed=3
    ).values()
    assert sorted(run.per_item) == list(range(6))
    assert set(run.per_item.values()) <= {0.0, 1.0}
    assert run.score == pytest.approx(sum(run.per_item.values()) / 6)


@pytest.mark.slow
def test_in_a_chat_loop_harness_prompts_are_in_the_chat_template_like_every_other_prompt(tmp_path: Path) -> None:
    """lm-eval renders a conversational loop's task prompts with the tokenizer's template and the loop's system
    prompt, the rendering `sil_stages.core.chat` gives any other prompt; a text loop's stay raw."""
    from sil_stages.core.chat import format_prompt
    from sil_stages.core.models import load_model, load_tokenizer
    from sil_stages.core.settings import ChatFormat
    from sil_stages.evaluate.harness import run_suite
    from tests.chat_model import build_tiny_chat_model

    chat_model = build_tiny_chat_model(tmp_path / "chat-model")
    model, tokenizer = load_model(str(chat_model)), load_tokenizer(str(chat_model))
    (suite,) = _prepare(tmp_path, _harness(["tiny-arith"], limit=2))

    (chat,) = run_suite(suite, model, tokenizer, batch_size=2, seed=1, chat=True, system_prompt="Be brief.").values()
    (text,) = run_suite(suite, model, tokenizer, batch_size=2, seed=1).values()

    question = text.example
    assert "<|im_start|>" not in question
    settings = ChatFormat.model_validate({"chat_template": "always", "system_prompt": "Be brief."})
    assert chat.example == format_prompt(tokenizer, question.strip(), settings)

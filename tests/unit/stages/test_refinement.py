"""Inference refinement at evaluation: pass@k, best-of-N and self-refine, what users compare training against."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sil_operator.gates.providers import ManifestProvider
from sil_stages.cli import main
from sil_stages.core.contract import EvaluateConfig, Manifest
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import SamplingRequest
from sil_stages.core.scoring import compile_pattern, make_verifier
from sil_stages.core.settings import SELF_REFINE_TEMPLATE, Refinement
from sil_stages.core.store import Store
from sil_stages.evaluate.refinement import best_index, needs_samples, pass_at_k, pass_at_ks, refine_prompt, self_refine
from sil_stages.evaluate.scoring import Scores, make_proxy, make_selector, score_dataset
from sil_stages.evaluate.series import flat_metrics, series_for
from sil_stages.select.scorers import Score
from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl

# -- pass@k --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),  # nothing correct: never passes
        (10, 0, 10, 0.0),
        (10, 10, 1, 1.0),  # everything correct
        (10, 3, 1, 0.3),  # pass@1 is the share of correct samples
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (8, 1, 4, 0.5),  # 1 - C(7,4)/C(8,4) = 1 - 35/70
        (10, 8, 3, 1.0),  # k > n - c: every draw of 3 holds a correct sample
        (4, 1, 4, 1.0),  # k = n: pass@n is "any correct"
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_is_the_unbiased_estimator_of_chen_et_al(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_the_binomial_formula_where_the_binomials_still_fit() -> None:
    for n in range(1, 30):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_stays_finite_for_many_samples() -> None:
    """The product form needs no C(256, 128), which no float holds."""
    assert 0.0 < pass_at_k(256, 3, 128) < 1.0
    assert pass_at_k(256, 3, 128) == pytest.approx(1 - math.comb(253, 128) / math.comb(256, 128))


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_the_k_reported_default_to_1_and_the_samples_and_are_sorted_and_unique() -> None:
    assert pass_at_ks(Refinement(samples=6)) == (1, 6)
    assert pass_at_ks(Refinement(samples=1)) == (1,)
    assert pass_at_ks(Refinement(samples=8, pass_at_k=[4, 1, 4])) == (1, 4)
    assert pass_at_ks(Refinement(samples=8, pass_at_k=[])) == ()


def test_a_k_above_the_samples_fails_the_stage_naming_the_field() -> None:
    with pytest.raises(StageInputError, match=r"refinement\.pass_at_k: k=16 is more than refinement\.samples=8"):
        pass_at_ks(Refinement(samples=8, pass_at_k=[1, 16]))


def test_samples_are_drawn_for_self_consistency_an_explicit_pass_at_k_or_best_of_n() -> None:
    assert needs_samples(Refinement())
    assert not needs_samples(Refinement(method="none"))
    assert needs_samples(Refinement(method="none", pass_at_k=[2]))
    assert not needs_samples(Refinement(method="none", pass_at_k=[]))
    assert needs_samples(Refinement(method="none", best_of_n=True))


# -- best-of-N -----------------------------------------------------------------------------------------------------


def test_best_of_n_picks_the_top_score_the_first_of_equals_and_never_an_unscored_sample() -> None:
    assert best_index([Score(0.2), Score(0.9), Score(0.9)]) == 1
    assert best_index([Score(None), Score(-1.0), Score(-0.5)]) == 2
    assert best_index([Score(0.0), Score(None)]) == 0
    assert best_index([Score(None), Score(None)]) is None
    assert best_index([]) is None


def closeness(prompt: str, completion: str, record: dict[str, Any]) -> float:
    """A grading user verifier: 1 for the right number, less the further off (0 for no number)."""
    try:
        return 1.0 / (1.0 + abs(int(completion.strip()) - int(record["answer"])))
    except ValueError:
        return 0.0


class ScriptedEngine:
    """Answers from a script: the greedy answer, the samples, and one line per self-refine round; it records the
    prompts of every call."""

    def __init__(self, greedy: str, samples: list[str], revisions: Sequence[str] = ()) -> None:
        self.greedy, self.samples, self.revisions = greedy, samples, list(revisions)
        self.calls: list[tuple[list[str], SamplingRequest]] = []

    def generate(self, prompts: Sequence[str], request: SamplingRequest) -> list[list[str]]:
        self.calls.append((list(prompts), request))
        if request.n > 1:
            return [list(self.samples) for _ in prompts]
        if len(self.calls) == 1:
            return [[self.greedy] for _ in prompts]
        return [[self.revisions.pop(0)] for _ in prompts]


RECORDS: list[dict[str, Any]] = [{"prompt": "1+2=", "answer": "3"}]


def _config(stage_config: StageConfig, **fields: Any) -> EvaluateConfig:
    data = stage_config("evaluate", candidate_uri="c", champion_uri="c", datasets=[], max_new_tokens=4, **fields)
    return EvaluateConfig.model_validate(data)


def _score(config: EvaluateConfig, engine: ScriptedEngine, tmp_path: Path) -> Scores:
    store = Store(tmp_path.as_uri())
    proxy = make_proxy(config, store)
    verifier = make_verifier(config.verifier, None, field="verifier", pattern_field="answer_pattern")
    run = score_dataset(
        engine,
        RECORDS,
        config,
        verifier,
        compile_pattern(None, field="p"),
        0,
        proxy,
        selector=make_selector(config, store, proxy),
    )
    return run.scores


def test_a_grading_select_scorer_makes_best_of_n_beat_self_consistency(
    stage_config: StageConfig, tmp_path: Path
) -> None:
    """The majority of the samples is wrong (5), the one right sample (3) is the one the grader ranks first."""
    config = _config(
        stage_config,
        refinement={"samples": 4, "temperature": 1.0, "best_of_n": True},
        training_scorer={"verifier": f"{__name__}:closeness"},
    )
    scores = _score(config, ScriptedEngine("5", ["5", "5", "4", "3"]), tmp_path)
    assert scores.self_consistency_score == 0.0
    assert scores.best_of_n_score == 1.0
    assert scores.pass_at == {1: pytest.approx(0.25), 4: 1.0}
    # The proxy guard judged the same scores: only the exact 3 reaches keep.minScore 1.
    assert scores.proxy_score == pytest.approx(0.25)


def any_number(prompt: str, completion: str, record: dict[str, Any]) -> float:
    """A coarse user verifier: 1 for any number at all, so right and wrong numbers tie."""
    return float(any(char.isdigit() for char in completion))


def test_best_of_n_takes_the_first_of_equally_scored_samples(stage_config: StageConfig, tmp_path: Path) -> None:
    """5 and 3 tie for the coarse scorer: the first in sample order (5, wrong) is the answer, not the right 3."""
    config = _config(
        stage_config,
        refinement={"samples": 3, "temperature": 1.0, "best_of_n": True, "method": "none"},
        training_scorer={"verifier": f"{__name__}:any_number"},
    )
    scores = _score(config, ScriptedEngine("5", ["x", "5", "3"]), tmp_path)
    assert scores.best_of_n_score == 0.0
    assert scores.self_consistency_score is None, "method none: no self-consistency, yet samples for best-of-N"


def test_best_of_n_by_the_held_out_verifier_is_an_oracle_equal_to_pass_at_n(
    stage_config: StageConfig, tmp_path: Path
) -> None:
    config = _config(stage_config, refinement={"samples": 4, "temperature": 1.0, "best_of_n": True})
    assert config.training_scorer is None
    scores = _score(config, ScriptedEngine("5", ["5", "5", "4", "3"]), tmp_path)
    assert scores.best_of_n_score == scores.pass_at[4] == 1.0


def test_without_best_of_n_no_best_of_n_score(stage_config: StageConfig, tmp_path: Path) -> None:
    config = _config(stage_config, refinement={"samples": 2, "temperature": 1.0})
    scores = _score(config, ScriptedEngine("3", ["3", "1"]), tmp_path)
    assert scores.best_of_n_score is None
    assert scores.pass_at == {1: 0.5, 2: 1.0}


# -- self-refine ---------------------------------------------------------------------------------------------------


def test_self_refine_revises_the_previous_rounds_answer_greedily_and_scores_each_round(
    stage_config: StageConfig, tmp_path: Path
) -> None:
    template = "Q {prompt} A {answer} again: {prompt}"
    config = _config(
        stage_config,
        refinement={"method": "none", "self_refine": {"rounds": 3, "template": template}},
    )
    engine = ScriptedEngine("5", [], revisions=["3", "4", "3"])
    scores = _score(config, engine, tmp_path)
    assert scores.self_refine == (1.0, 0.0, 1.0)
    revision_calls = engine.calls[1:]
    assert [prompts for prompts, _ in revision_calls] == [
        ["Q 1+2= A 5 again: 1+2="],
        ["Q 1+2= A 3 again: 1+2="],
        ["Q 1+2= A 4 again: 1+2="],
    ]
    assert all(request.temperature == 0.0 and request.n == 1 for _, request in revision_calls)


def test_the_revision_prompt_keeps_braces_in_questions_and_answers_as_text() -> None:
    assert refine_prompt("{prompt}|{answer}", "f({answer})", "{prompt}") == "f({answer})|{prompt}"


def test_the_default_template_names_the_question_and_the_answer_and_ends_with_the_question() -> None:
    assert "{prompt}" in SELF_REFINE_TEMPLATE and "{answer}" in SELF_REFINE_TEMPLATE
    assert SELF_REFINE_TEMPLATE.endswith("{prompt}")


def test_self_refine_is_off_by_default() -> None:
    class Refuses:
        def generate(self, prompts: Sequence[str], request: SamplingRequest) -> list[list[str]]:
            raise AssertionError("no round, no generation")

    assert self_refine(Refuses(), ["1+2="], ["3"], Refinement(), 4) == []


# -- series and metrics --------------------------------------------------------------------------------------------


def test_pass_at_k_and_self_refine_are_series_with_a_k_and_a_round_label(stage_config: StageConfig) -> None:
    config = _config(stage_config)
    scores = Scores(score=0.5, best_of_n_score=0.75, pass_at={1: 0.5, 8: 0.9}, self_refine=(0.5, 0.625))
    series = {
        (s.name, s.labels.get("k"), s.labels.get("round")): s.value
        for s in series_for(config, {"heldout": {"candidate": scores}})
        if s.labels["model"] == "candidate"
    }
    assert series[("selfimprove_eval_pass_at_k", "1", None)] == 0.5
    assert series[("selfimprove_eval_pass_at_k", "8", None)] == 0.9
    assert series[("selfimprove_eval_best_of_n_score", None, None)] == 0.75
    assert series[("selfimprove_eval_self_refine_score", None, "1")] == 0.5
    assert series[("selfimprove_eval_self_refine_score", None, "2")] == 0.625
    metrics = flat_metrics({"heldout": {"candidate": scores, "champion": Scores(score=0.5)}})
    assert metrics["heldout/candidate/pass_at_8"] == 0.9
    assert metrics["heldout/candidate/best_of_n_score"] == 0.75
    assert metrics["heldout/candidate/self_refine_round_2"] == 0.625


@pytest.mark.slow
def test_evaluate_on_the_tiny_model_reports_pass_at_k_best_of_n_and_a_self_refine_score_per_round(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    """The default template is mostly unknown characters to the tiny model (<unk>): generation still runs, and the
    score after each round is reported, however low."""
    records = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in [(1, 2), (3, 4)]]
    heldout = write_jsonl(tmp_path / "heldout.jsonl", records).as_uri()
    config = stage_config(
        "evaluate",
        candidate_uri=tiny_model.as_uri(),
        champion_uri=tiny_model.as_uri(),
        datasets=[{"name": "heldout", "uri": heldout}],
        refinement={
            "samples": 3,
            "temperature": 1.0,
            "pass_at_k": [1, 2],
            "best_of_n": True,
            "self_refine": {"rounds": 2},
        },
        max_new_tokens=3,
    )
    assert main(["evaluate", "--config", json.dumps(config)]) == 0
    manifest = json.loads((output_dir(config) / "_manifest.json").read_text())
    names = {
        (s["name"], s["labels"]["model"], s["labels"].get("k"), s["labels"].get("round"))
        for s in manifest["series"]
        if s["name"]
        in {"selfimprove_eval_pass_at_k", "selfimprove_eval_best_of_n_score", "selfimprove_eval_self_refine_score"}
    }
    assert names == {
        (name, model, k, round_)
        for model in ("candidate", "champion")
        for name, k, round_ in [
            ("selfimprove_eval_pass_at_k", "1", None),
            ("selfimprove_eval_pass_at_k", "2", None),
            ("selfimprove_eval_best_of_n_score", None, None),
            ("selfimprove_eval_self_refine_score", None, "1"),
            ("selfimprove_eval_self_refine_score", None, "2"),
        ]
    }
    metrics = manifest["metrics"]
    for key in ("pass_at_1", "pass_at_2", "best_of_n_score", "self_refine_round_1", "self_refine_round_2"):
        assert 0.0 <= metrics[f"heldout/candidate/{key}"] <= 1.0
    assert metrics["heldout/candidate/pass_at_1"] <= metrics["heldout/candidate/pass_at_2"]
    # The held-out verifier ranks the samples: best-of-N is the oracle, pass@samples.
    assert metrics["heldout/candidate/best_of_n_score"] == metrics["heldout/candidate/pass_at_k"]


def test_a_local_gate_reads_pass_at_k_of_one_k_from_the_evaluate_manifest(
    stage_config: StageConfig, tmp_path: Path
) -> None:
    """Series usable in gates: without Prometheus, the gate's selector is answered from the manifest's series."""
    config = _config(stage_config)
    scores = Scores(score=0.5, pass_at={1: 0.5, 8: 0.9}, self_refine=(0.5, 0.625))
    series = series_for(config, {"heldout": {"candidate": scores, "champion": Scores(score=0.25)}})
    now = datetime.now(UTC)
    manifest = Manifest(
        stage="evaluate",
        iteration=1,
        loop="test-loop",
        series=series,
        started_at=now,
        finished_at=now,
        duration_seconds=0,
    )
    storage = str(config.storage.uri)
    store = Store()
    store.write_text(f"{storage}/iterations/1/evaluate/_manifest.json", manifest.model_dump_json())
    provider = ManifestProvider(store, storage)
    query = 'selfimprove_eval_pass_at_k{iteration="1",dataset="heldout",model="candidate",k="8"}'
    assert [sample.value for sample in provider.query(query)] == [0.9]
    last_round = 'selfimprove_eval_self_refine_score{iteration="1",model="candidate",round="2"}'
    assert [sample.value for sample in provider.query(last_round)] == [0.625]

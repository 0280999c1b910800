"""`acquire.sampling.temperature: auto`: the probe picks the temperature whose samples select would keep most of.

A fake engine answers each probed temperature with a fixed pattern of completions (right answers, variants of them
and wrong ones), so the best temperature is known in advance; the loop's real verifier scorer (exact-match on the
record's `answer`, first line) scores them, as select would. The last tests run the acquire stage itself on the
tiny random model: what they check (the manifest, the table, a retry agreeing) does not depend on what it writes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from sil_stages.acquire.temperature import TEMPERATURE_FILE, choose, pick, probe_draw, probe_row
from sil_stages.cli import main
from sil_stages.core.contract import OptimizeConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import SamplingRequest
from sil_stages.core.settings import AutoTemperature, Difficulty, Keep, Sampling, Scorer
from sil_stages.core.store import Store
from sil_stages.optimize.methods.base import TrainingJob
from sil_stages.optimize.methods.grpo import METHOD, rollout_temperature
from sil_stages.select.scorers import PromptSamples, Score, ScorerContext, make_scorer
from tests.unit.stages.conftest import StageConfig, output_dir, write_jsonl

RIGHT, VARIANT, WRONG = "R", "V", "W"
"""A pattern's letters: the answer; the answer with a suffix of its own after a newline (passing, but a distinct
completion); a wrong answer."""

PATTERNS: dict[float, str] = {
    0.3: "RRRR",  # always right, always the same completion: 1 distinct passing answer per prompt
    0.6: "RVVW",  # 3 distinct passing answers, pass rate 0.75
    0.9: "VWWW",  # 1 distinct passing answer, pass rate 0.25
    1.2: "WWWW",  # nothing
}


class PatternEngine:
    """Completions by temperature: PATTERNS spelled out with each prompt's answer; records what it was asked."""

    def __init__(self, answers: Mapping[str, str], patterns: Mapping[float, str] = PATTERNS) -> None:
        self.answers = answers
        self.patterns = patterns
        self.requests: list[SamplingRequest] = []

    def generate(self, prompts: Sequence[str], request: SamplingRequest) -> list[list[str]]:
        self.requests.append(request)
        pattern = self.patterns[round(request.temperature, 6)]
        assert len(pattern) == request.n
        return [
            [self._spell(letter, index, self.answers[prompt]) for index, letter in enumerate(pattern)]
            for prompt in prompts
        ]

    @staticmethod
    def _spell(letter: str, index: int, answer: str) -> str:
        if letter == RIGHT:
            return answer
        if letter == VARIANT:
            return f"{answer}\nvariant {index}"
        return "x"


class SeededEngine:
    """Right with a probability falling with the temperature, drawn from the request's seed: a retried probe with
    the same seeds must agree."""

    def generate(self, prompts: Sequence[str], request: SamplingRequest) -> list[list[str]]:
        rng = random.Random(f"{request.seed}:{request.temperature}")
        return [
            [
                str(ANSWERS[p]) + (f"\n{rng.random():.3f}" if rng.random() < 0.5 else "")
                if rng.random() > request.temperature / 2
                else "x"
                for _ in range(request.n)
            ]
            for p in prompts
        ]


ANSWERS = {f"{i}+1=": str(i + 1) for i in range(40)}
PROMPTS = [{"prompt": prompt, "answer": answer} for prompt, answer in ANSWERS.items()]
VERIFIER = make_scorer(ScorerContext(settings=Scorer()))


DEFAULT_KEEP, DEFAULT_BOUNDS = Keep(), AutoTemperature()


def _choose(keep: Keep = DEFAULT_KEEP, bounds: AutoTemperature = DEFAULT_BOUNDS, **kwargs: Any) -> Any:
    engine = kwargs.pop("engine", PatternEngine(ANSWERS))
    return choose(
        engine,
        VERIFIER,
        PROMPTS,
        sampling=Sampling(temperature="auto", max_new_tokens=4),
        bounds=bounds,
        keep=keep,
        samples_per_prompt=4,
        draw_seed=kwargs.pop("draw_seed", 1),
        generation_seed=7,
        **kwargs,
    )


def test_the_default_grid_is_four_temperatures_from_0_3_to_1_2() -> None:
    assert AutoTemperature().grid() == (0.3, 0.6, 0.9, 1.2)
    assert AutoTemperature(min=0.5, max=0.5, points=4).grid() == (0.5,)


def test_auto_picks_the_temperature_with_the_most_distinct_passing_answers_per_prompt() -> None:
    choice = _choose()
    assert choice.temperature == 0.6
    table = {row.temperature: (row.pass_share, row.distinct_passing, row.objective) for row in choice.rows}
    assert table == {0.3: (1.0, 1.0, 1.0), 0.6: (0.75, 3.0, 3.0), 0.9: (0.25, 1.0, 1.0), 1.2: (0.0, 0.0, 0.0)}
    assert choice.why.startswith("temperature 0.6: 3.000 expected kept examples per prompt")
    assert "beats 0.3 (1.000)" in choice.why


def test_top_k_caps_the_objective_and_a_tie_goes_to_the_lower_temperature() -> None:
    """With topK 1 every temperature that passes at all keeps one example per prompt: 0.3, 0.6 and 0.9 tie."""
    choice = _choose(keep=Keep(top_k=1))
    assert [row.objective for row in choice.rows] == [1.0, 1.0, 1.0, 0.0]
    assert choice.temperature == 0.3
    assert "ties with 0.6" in choice.why and "the lower temperature wins ties" in choice.why


def test_top_k_2_still_prefers_the_temperature_with_several_distinct_answers() -> None:
    assert _choose(keep=Keep(top_k=2)).temperature == 0.6


def test_the_difficulty_band_counts_only_prompts_whose_pass_rate_lies_in_it() -> None:
    """DAPO's band (some right, some wrong): 0.3 (all right) and 1.2 (all wrong) keep nothing; 0.6 keeps 3, 0.9 1."""
    band = Keep(difficulty=Difficulty(min_pass_rate=0.0, max_pass_rate=1.0, exclusive=True))
    choice = _choose(keep=band)
    assert {row.temperature: row.prompts_in_band for row in choice.rows} == {0.3: 0, 0.6: 32, 0.9: 32, 1.2: 0}
    assert {row.temperature: row.objective for row in choice.rows} == {0.3: 0.0, 0.6: 3.0, 0.9: 1.0, 1.2: 0.0}
    assert choice.temperature == 0.6
    # A band of the hard prompts only (pass rate at most 0.5): 0.9 is the one temperature that serves it.
    assert _choose(keep=Keep(difficulty=Difficulty(min_pass_rate=0.01, max_pass_rate=0.5))).temperature == 0.9


def test_only_temperatures_within_the_bounds_are_probed() -> None:
    engine = PatternEngine(ANSWERS, {0.9: "VWWW", 1.2: "WWWW", 1.05: "VVWW"})
    choice = _choose(bounds=AutoTemperature(min=0.9, max=1.2, points=3), engine=engine)
    assert sorted({request.temperature for request in engine.requests}) == [0.9, 1.05, 1.2]
    assert choice.temperature == 1.05, "the best within the bounds, though 0.6 would be better"


def test_nothing_passing_anywhere_takes_the_lowest_temperature_and_says_so() -> None:
    engine = PatternEngine(ANSWERS, dict.fromkeys(PATTERNS, "WWWW"))
    choice = _choose(engine=engine)
    assert choice.temperature == 0.3
    assert "no temperature gave select anything to keep" in choice.why


def test_the_probe_draws_probe_prompts_of_the_prompts_the_same_way_for_the_same_seed() -> None:
    engine = PatternEngine(ANSWERS)
    choice = _choose(bounds=AutoTemperature(probe_prompts=8), engine=engine, draw_seed=3)
    assert choice.probe_prompts == 8
    assert probe_draw(PROMPTS, 8, 3) == probe_draw(PROMPTS, 8, 3) != probe_draw(PROMPTS, 8, 4)
    assert len(probe_draw(PROMPTS, 100, 3)) == len(PROMPTS), "fewer prompts than probePrompts: all of them"
    assert {request.seed for request in engine.requests} == {7}, "every temperature on the same random numbers"


def test_a_retried_probe_with_the_same_seeds_picks_the_same_temperature_from_the_same_table() -> None:
    first, again = _choose(engine=SeededEngine()), _choose(engine=SeededEngine())
    assert (first.temperature, first.rows) == (again.temperature, again.rows)


def test_the_cost_is_the_time_the_probe_took_on_the_clock_it_is_given() -> None:
    ticks = iter([100.0, 102.5])
    assert _choose(clock=lambda: next(ticks)).seconds == 2.5


def test_pick_breaks_ties_by_the_lower_temperature_whatever_the_order() -> None:
    groups = [PromptSamples("1+1=", ("2", "2"), {"answer": "2"})]
    scores = [[Score(1.0), Score(1.0)]]
    rows = [probe_row(t, groups, scores, Keep()) for t in (0.9, 0.3, 0.6)]
    assert pick(rows).temperature == 0.3
    with pytest.raises(ValueError, match="no temperature"):
        pick([])


# the stage


def _acquire(stage_config: StageConfig, tiny_model: Path, prompts: str, **sampling: Any) -> dict[str, Any]:
    return stage_config(
        "acquire",
        model_uri=tiny_model.as_uri(),
        prompts_uri=prompts,
        samples_per_prompt=2,
        sampling={"max_new_tokens": 2, **sampling},
        batch_size=16,
    )


@pytest.mark.slow
def test_the_acquire_stage_records_the_choice_and_a_retry_picks_the_same(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)])
    auto = {"temperature": "auto", "auto_temperature": {"min": 0.5, "max": 1.5, "points": 3, "probe_prompts": 4}}
    config = _acquire(stage_config, tiny_model, prompts.as_uri(), **auto)
    assert main(["acquire", "--config", json.dumps(config)]) == 0
    out = output_dir(config)
    manifest = json.loads((out / "_manifest.json").read_text())
    table = json.loads((out / TEMPERATURE_FILE).read_text())
    assert manifest["metrics"]["temperature"] == table["temperature"]
    assert table["temperature"] in (0.5, 1.0, 1.5)
    assert [row["temperature"] for row in table["rows"]] == [0.5, 1.0, 1.5]
    assert table["probe_prompts"] == 4
    assert manifest["metrics"]["temperature_probe_seconds"] == table["seconds"] > 0
    assert manifest["findings"]["temperature/probe"][-1] == table["why"]
    assert TEMPERATURE_FILE in {entry["path"] for entry in manifest["files"]}

    (out / "_manifest.json").unlink()  # the stage did not finish: a retry runs it again
    assert main(["acquire", "--config", json.dumps(config)]) == 0
    again = json.loads((out / TEMPERATURE_FILE).read_text())
    assert (again["temperature"], again["rows"]) == (table["temperature"], table["rows"])


@pytest.mark.slow
def test_a_fixed_temperature_is_recorded_without_a_probe(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1="} for i in range(3)])
    config = _acquire(stage_config, tiny_model, prompts.as_uri(), temperature=0.7)
    assert main(["acquire", "--config", json.dumps(config)]) == 0
    manifest = json.loads((output_dir(config) / "_manifest.json").read_text())
    assert (manifest["metrics"]["temperature"], manifest["metrics"]["temperature_probe_seconds"]) == (0.7, 0.0)
    assert not (output_dir(config) / TEMPERATURE_FILE).exists()


# GRPO's rollouts


def _grpo_job(stage_config: StageConfig, tiny_model: Path, tmp_path: Path, **optimize: Any) -> TrainingJob:
    """What GRPO's train function is given for iteration 1 of the stage_config store (no records: not trained)."""
    config = OptimizeConfig.model_validate(
        stage_config(
            "optimize",
            train_uri=(tmp_path / "train.jsonl").as_uri(),
            init_model_uri=tiny_model.as_uri(),
            method="grpo",
            **optimize,
        )
    )
    return TrainingJob(
        config=config,
        model_path=str(tiny_model),
        base_model=lambda: str(tiny_model),
        records=[],
        workdir=tmp_path / "work",
        seed=0,
        store=Store(),
    )


@pytest.mark.slow
def test_grpo_auto_rolls_out_at_the_temperature_acquires_probe_chose(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)])
    auto = {"temperature": "auto", "auto_temperature": {"min": 0.5, "max": 1.5, "points": 3, "probe_prompts": 4}}
    acquire = _acquire(stage_config, tiny_model, prompts.as_uri(), **auto)
    assert main(["acquire", "--config", json.dumps(acquire)]) == 0
    chosen = json.loads((output_dir(acquire) / TEMPERATURE_FILE).read_text())["temperature"]

    job = _grpo_job(stage_config, tiny_model, tmp_path, grpo={"temperature": "auto"}, acquire_uri=acquire["output_uri"])
    assert rollout_temperature(job, METHOD.settings_of(job.config)) == chosen


def test_grpo_with_a_number_rolls_out_at_that_number_without_reading_acquire(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    job = _grpo_job(stage_config, tiny_model, tmp_path, grpo={"temperature": 0.8}, acquire_uri="file:///nowhere")
    assert rollout_temperature(job, METHOD.settings_of(job.config)) == 0.8


def test_grpo_auto_without_a_finished_acquire_says_what_is_missing(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    job = _grpo_job(stage_config, tiny_model, tmp_path, grpo={"temperature": "auto"})
    with pytest.raises(StageInputError, match="auto needs acquire_uri"):
        rollout_temperature(job, METHOD.settings_of(job.config))

    never_ran = (tmp_path / "store" / "iterations" / "1" / "acquire").as_uri()
    job = _grpo_job(stage_config, tiny_model, tmp_path, grpo={"temperature": "auto"}, acquire_uri=never_ran)
    with pytest.raises(StageInputError, match="cannot read the acquire manifest"):
        rollout_temperature(job, METHOD.settings_of(job.config))

"""The model-based scorers (`reward-model`, `llm-judge`) on real tiny models, the user-class scorer, and the
registry: what select, GRPO's reward and evaluate's guard get from `make_scorer`."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import SCORER_TYPES, Judge
from sil_stages.core.settings import Scorer as ScorerSettings
from sil_stages.select.scorers import REGISTRY, PromptSamples, Score, ScorerContext, make_scorer
from sil_stages.select.scorers.llm_judge import DEFAULT_SCORE_PATTERN, judge_prompt, parse_judgment
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl

GROUPS = [
    PromptSamples("1+1=", ("2", "3", "two, obviously"), {"answer": "2"}),
    PromptSamples("what is the largest planet? ", ("jupiter.", "a"), {}),
    PromptSamples("9+9=", ("18",), {}),
]


def _batch_tolerance() -> float:
    """float32 on CPU: batching changes nothing but summation order. bf16 on CUDA (what the scorer uses there):
    kernels chosen by shape round differently, so only a looser bound holds (this bound has not been run on a GPU)."""
    import torch

    return 2e-2 if torch.cuda.is_available() else 1e-5


BATCH_TOLERANCE = _batch_tolerance()


def _save_reward_model(
    directory: Path, tokenizer_dir: Path, *, num_labels: int = 1, pad_token_id: int | None = None
) -> Any:
    """A tiny Llama sequence classifier sharing the tiny causal LM's tokenizer; by default its config has no pad
    token id (as many hub reward models' configs do), so the scorer must supply it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, set_seed

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    config.num_labels = num_labels
    model = LlamaForSequenceClassification(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def reward_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("reward-model")
    _save_reward_model(directory, tiny_model)
    return directory


def _context(**settings: Any) -> ScorerContext:
    champion = settings.pop("champion_uri", None)
    return ScorerContext(settings=ScorerSettings(**settings), champion_uri=champion, seed=0)


def _values(scores: list[list[Score]]) -> list[list[float | None]]:
    return [[score.value for score in group] for group in scores]


def test_every_built_in_scorer_type_is_registered() -> None:
    """The spec's enum of scorer types and the registry are one list: a type users can write always has a scorer."""
    assert set(REGISTRY) == set(SCORER_TYPES)


# reward-model


def test_reward_model_scores_every_completion_with_its_logit(reward_model: Path) -> None:
    scorer = make_scorer(_context(type="reward-model", model=str(reward_model)))
    scores = scorer.score(GROUPS)
    assert [len(group) for group in scores] == [3, 2, 1]
    values = [value for group in _values(scores) for value in group]
    assert all(isinstance(value, float) for value in values)
    assert len(set(values)) == len(values), "different texts should get different rewards"
    report = scorer.report()
    assert set(report) == {"reward_mean", "reward_std", "reward_min", "reward_max"}
    numbers = [value for value in values if value is not None]
    assert report["reward_min"] == min(numbers) and report["reward_max"] == max(numbers)
    assert report["reward_mean"] == pytest.approx(sum(numbers) / len(numbers))


def test_reward_model_scores_do_not_depend_on_the_batch_size(reward_model: Path) -> None:
    """Padding must not move the score: it is read at each text's own last token, whatever it is batched with."""
    one = make_scorer(_context(type="reward-model", model=str(reward_model), batch_size=1)).score(GROUPS)
    many = make_scorer(_context(type="reward-model", model=str(reward_model), batch_size=64)).score(GROUPS)
    for single, batched in zip(_values(one), _values(many), strict=True):
        assert batched == pytest.approx(single, abs=BATCH_TOLERANCE)


def test_a_config_pad_id_other_than_the_tokenizers_does_not_move_scores(tiny_model: Path, tmp_path: Path) -> None:
    """The model finds the last real token by the config's pad id; the scorer pads with the tokenizer's, so the
    two are made one (else the score of a padded text is read at a pad token)."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_model).eos_token_id
    _save_reward_model(tmp_path / "rm", tiny_model, pad_token_id=eos)
    one = make_scorer(_context(type="reward-model", model=str(tmp_path / "rm"), batch_size=1)).score(GROUPS)
    many = make_scorer(_context(type="reward-model", model=str(tmp_path / "rm"), batch_size=64)).score(GROUPS)
    for single, batched in zip(_values(one), _values(many), strict=True):
        assert batched == pytest.approx(single, abs=BATCH_TOLERANCE)


def test_reward_model_reads_the_conversation_in_its_chat_template(reward_model: Path, tmp_path: Path) -> None:
    """A chat reward model was trained on conversations: prompt and completion are the user and assistant turns."""
    import shutil

    from transformers import AutoTokenizer

    from sil_stages.select.scorers.reward_model import reward_text

    chat = tmp_path / "chat-rm"
    shutil.copytree(reward_model, chat)
    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'][0] }}={{ m['content'] }}\n{% endfor %}"
    tokenizer.save_pretrained(chat)
    assert reward_text(tokenizer, "1+1=", "2") == "u=1+1=\na=2\n"
    plain = make_scorer(_context(type="reward-model", model=str(reward_model))).score(GROUPS[:1])
    templated = make_scorer(_context(type="reward-model", model=str(chat))).score(GROUPS[:1])
    assert _values(plain) != _values(templated)


def test_a_reward_model_trained_on_good_and_bad_answers_ranks_them(tiny_model: Path, tmp_path: Path) -> None:
    """A few Bradley-Terry steps (RewardTrainer's loss) on one preference make the scorer rank it the same way."""
    import torch
    from transformers import AutoTokenizer

    model = _save_reward_model(tmp_path / "untrained", tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs = [("1+1=", "2", "zzzz"), ("2+2=", "4", "zzzz"), ("3+3=", "6", "zz")]
    chosen = tokenizer([p + good for p, good, _ in pairs], return_tensors="pt", padding=True, padding_side="right")
    rejected = tokenizer([p + bad for p, _, bad in pairs], return_tensors="pt", padding=True, padding_side="right")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):
        gap = model(**chosen).logits - model(**rejected).logits
        loss = -torch.nn.functional.logsigmoid(gap).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")

    def margin(path: Path) -> float:
        scorer = make_scorer(_context(type="reward-model", model=str(path)))
        good, bad = _values(scorer.score([PromptSamples("5+5=", ("10", "zzzz"), {})]))[0]
        assert good is not None and bad is not None
        return good - bad

    untrained, trained = margin(tmp_path / "untrained"), margin(tmp_path / "trained")
    assert abs(untrained) < 0.5, "a random score head has no preference to speak of"
    assert trained > 1.0


def test_reward_model_without_a_model_names_the_field() -> None:
    with pytest.raises(StageInputError, match=r"select\.scorer\.model.*none is set"):
        make_scorer(_context(type="reward-model"))


def _config_only(directory: Path, config: Any) -> str:
    """A checkpoint directory with a config and no weights: the scorer must reject it before loading any."""
    directory.mkdir()
    config.save_pretrained(directory)
    return str(directory)


def test_a_causal_lm_is_not_a_reward_model(tmp_path: Path) -> None:
    """Transformers would load it with a random score head; the error says what was found and what to do."""
    from transformers import LlamaConfig

    path = _config_only(tmp_path / "lm", LlamaConfig(architectures=["LlamaForCausalLM"]))
    with pytest.raises(StageInputError) as raised:
        make_scorer(_context(type="reward-model", model=path))
    message = str(raised.value)
    assert "select.scorer.model" in message
    assert "LlamaForCausalLM" in message
    assert "RewardTrainer" in message


def test_a_two_label_classifier_is_not_a_reward_model(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(architectures=["LlamaForSequenceClassification"])
    config.num_labels = 2
    path = _config_only(tmp_path / "classifier", config)
    with pytest.raises(StageInputError, match=r"select\.scorer\.model.*num_labels=2"):
        make_scorer(_context(type="reward-model", model=path))


def test_a_reward_model_path_without_a_config_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(StageInputError, match=r"select\.scorer\.model.*cannot read a model config"):
        make_scorer(_context(type="reward-model", model=str(tmp_path / "missing")))


def test_a_reward_model_uri_is_resolved_through_the_store(reward_model: Path, tmp_path: Path) -> None:
    """In a stage the model is a URI (file://, s3://); the store resolves it and its errors name the field."""
    from sil_stages.core.contract import StorageOptions
    from sil_stages.core.store import Store

    store = Store(StorageOptions(uri=(tmp_path / "store").as_uri()))
    settings = ScorerSettings(type="reward-model", model=reward_model.as_uri())
    scores = make_scorer(ScorerContext(settings=settings, store=store)).score(GROUPS[:1])
    assert len(scores[0]) == 3
    missing = ScorerSettings(type="reward-model", model=(tmp_path / "nothing").as_uri())
    with pytest.raises(StageInputError, match=r"select\.scorer\.model"):
        make_scorer(ScorerContext(settings=missing, store=store))


# llm-judge


@pytest.mark.parametrize(
    ("judgment", "expected"),
    [
        ("The answer is relevant and complete. Score: 4", 4.0),
        ("Score: 3.5\nthen more text Score: 1", 3.5),
        ("Score:5", 5.0),
        ("I would give it four points.", None),
        ("", None),
    ],
)
def test_the_default_pattern_reads_the_self_rewarding_score_line(judgment: str, expected: float | None) -> None:
    assert parse_judgment(judgment, re.compile(DEFAULT_SCORE_PATTERN)) == expected


@pytest.mark.parametrize(
    ("pattern", "judgment", "expected"),
    [
        (r"\[\[(\d+)\]\]", "Rating: [[7]]", 7.0),
        (r"[0-9]", "abc 8 9", 8.0),
        (r"rating=(\w+)", "rating=high", None),
        (r"(nan|inf)", "nan", None),
    ],
)
def test_a_custom_pattern_reads_its_first_group_else_its_whole_match(
    pattern: str, judgment: str, expected: float | None
) -> None:
    """A match that is not a finite number is no score, not a crash."""
    assert parse_judgment(judgment, re.compile(pattern)) == expected


def test_the_judge_prompt_puts_question_and_answer_in_by_plain_replacement() -> None:
    """Rubrics hold JSON and other braces: str.format would fail on them."""
    template = 'Q: {prompt}\nA: {completion}\nReply as {"score": n}'
    assert judge_prompt(template, "1+1=", "{2}") == 'Q: 1+1=\nA: {2}\nReply as {"score": n}'


def test_the_judge_prompt_is_one_user_turn_in_the_judges_chat_template(tiny_model: Path) -> None:
    """The judge's engine formats its question like any prompt (sil_stages.core.chat), with the judge's template."""
    from transformers import AutoTokenizer

    from sil_stages.core.chat import PromptFormat
    from sil_stages.core.settings import ChatFormat

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    question = judge_prompt("{prompt}|{completion}", "q", "a")
    assert PromptFormat.of(tokenizer, ChatFormat()).text(question) == "q|a", "no chat template: the raw text"
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert PromptFormat.of(tokenizer, ChatFormat()).text(question) == "<user>q|a<assistant>"


def _judge(model: Path | None, pattern: str, **fields: Any) -> ScorerContext:
    judge = Judge(
        template="Q {prompt} A {completion} S ", score_pattern=pattern, temperature=1.0, max_new_tokens=24, **fields
    )
    return _context(type="llm-judge", model=str(model) if model else None, judge=judge)


def test_the_judge_generates_judgments_and_scores_them_with_the_pattern(tiny_model: Path) -> None:
    """End to end on a real (random) model: over a vocabulary of digits and letters, `[0-9]` matches its output."""
    scorer = make_scorer(_judge(tiny_model, "[0-9]", samples=2))
    scores = scorer.score(GROUPS)
    assert [len(group) for group in scores] == [3, 2, 1]
    flat_scores = [score for group in scores for score in group]
    parsed = [score.value for score in flat_scores if score.value is not None]
    assert parsed, "a random model over digits writes a digit within 24 characters"
    assert all(0.0 <= value <= 9.0 for value in parsed)
    assert all(isinstance(score.details["judgment"], str) for score in flat_scores)
    json.dumps([score.details for score in flat_scores])  # the details go into scored.jsonl
    report = scorer.report()
    assert report["judge_parse_rate"] == pytest.approx(len(parsed) / 6)
    assert report["judge_unparsed"] == 6 - len(parsed)
    assert report["judge_score_mean"] == pytest.approx(sum(parsed) / len(parsed))


def test_a_judge_whose_output_never_matches_fails_with_the_parse_rate_and_first_judgment(tiny_model: Path) -> None:
    """A broken template or pattern must fail the stage, not silently score nothing; the message shows why."""
    scorer = make_scorer(_judge(tiny_model, "SCORE=[0-9]"))  # capitals are not in the tiny vocabulary
    with pytest.raises(StageInputError) as raised:
        scorer.score(GROUPS)
    message = str(raised.value)
    assert "0%" in message and "0 of 6" in message
    assert "first judgment without one was '" in message
    assert "select.scorer.judge.template" in message and "select.scorer.judge.scorePattern" in message
    assert "select.scorer.judge.maxNewTokens" in message


def test_a_judge_below_min_parse_rate_zero_keeps_unparsed_answers_unscored(tiny_model: Path) -> None:
    scorer = make_scorer(_judge(tiny_model, "SCORE=[0-9]", min_parse_rate=0.0))
    scores = scorer.score(GROUPS[:1])
    assert _values(scores) == [[None, None, None]]
    assert scorer.report() == {"judge_parse_rate": 0.0, "judge_unparsed": 3.0}


def test_the_judge_defaults_to_the_champion(tiny_model: Path) -> None:
    """Self-rewarding: with no scorer.model the model being improved judges its own answers."""
    context = _judge(None, "[0-9]", min_parse_rate=0.0)
    context = ScorerContext(settings=context.settings, champion_uri=str(tiny_model))
    assert len(make_scorer(context).score(GROUPS[:1])[0]) == 3


def test_scorer_model_overrides_the_champion_as_judge(tiny_model: Path, tmp_path: Path) -> None:
    context = _judge(tiny_model, "[0-9]", min_parse_rate=0.0)
    context = ScorerContext(settings=context.settings, champion_uri=str(tmp_path / "no-such-champion"))
    assert len(make_scorer(context).score(GROUPS[:1])[0]) == 3


def test_a_judge_with_neither_model_nor_champion_names_the_field() -> None:
    with pytest.raises(StageInputError, match=r"select\.scorer\.model"):
        make_scorer(_judge(None, "[0-9]"))


# user classes


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on the import path, as `sil run` puts the loop file's directory there."""
    name = f"user_scorers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            class Length:
                def __init__(self, context):
                    self.context = context

                def score(self, groups):
                    return [[len(c) for c in group.completions] for group in groups]

                def report(self):
                    return {"length_scorer": 1.0}


            class OneListPerAnswer:
                def __init__(self, context):
                    pass

                def score(self, groups):
                    return [1.0 for group in groups for c in group.completions]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_user_class_is_built_by_make_scorer(user_module: str) -> None:
    scorer = make_scorer(_context(type=f"{user_module}:Length"))
    assert _values(scorer.score(GROUPS)) == [[1.0, 1.0, 14.0], [8.0, 1.0], [2.0]]
    assert scorer.report() == {"length_scorer": 1.0}


def test_a_user_class_returning_the_wrong_shape_is_a_clear_error(user_module: str) -> None:
    scorer = make_scorer(_context(type=f"{user_module}:OneListPerAnswer"))
    with pytest.raises(
        StageInputError, match=r"select\.scorer\.type: .*OneListPerAnswer.*one list of scores per prompt"
    ):
        scorer.score(GROUPS)


# through the select stage


def _select(tmp_path: Path, stage_config: StageConfig, scorer: dict[str, Any], **fields: Any) -> dict[str, Any]:
    samples = write_jsonl(
        tmp_path / "samples.jsonl",
        [{"prompt": "1+1=", "completions": ["2", "3", "zz"]}, {"prompt": "q", "completions": ["a"]}],
    )
    return stage_config("select", samples_uri=samples.as_uri(), scorer=scorer, keep={"min_score": -1e9}, **fields)


def test_select_scores_with_a_reward_model_given_as_a_uri(
    reward_model: Path, tmp_path: Path, stage_config: StageConfig
) -> None:
    """The stage resolves the URI through its store, writes each logit to scored.jsonl and the reward stats to its
    manifest."""
    config = _select(tmp_path, stage_config, {"type": "reward-model", "model": reward_model.as_uri()})
    assert main(["select", "--config", json.dumps(config)]) == 0
    scored = read_jsonl(output_dir(config) / "scored.jsonl")
    assert len(scored) == 4 and all(isinstance(row["score"], float) for row in scored)
    metrics = json.loads((output_dir(config) / "_manifest.json").read_text())["metrics"]
    assert metrics["reward_max"] == max(row["score"] for row in scored)


def test_select_with_a_causal_lm_as_reward_model_exits_2(
    tiny_model: Path, tmp_path: Path, stage_config: StageConfig
) -> None:
    """A bad input, not a crash: retrying the stage would not help."""
    config = _select(tmp_path, stage_config, {"type": "reward-model", "model": tiny_model.as_uri()})
    assert main(["select", "--config", json.dumps(config)]) == 2


def test_select_judges_with_the_champion_and_shows_the_judgment(
    tiny_model: Path, tmp_path: Path, stage_config: StageConfig
) -> None:
    judge = {
        "template": "Q {prompt} A {completion} S ",
        "scorePattern": "[0-9]",
        "temperature": 1.0,
        "maxNewTokens": 16,
        "minParseRate": 0,
    }
    config = _select(tmp_path, stage_config, {"type": "llm-judge", "judge": judge}, champion_uri=tiny_model.as_uri())
    assert main(["select", "--config", json.dumps(config)]) == 0
    scored = read_jsonl(output_dir(config) / "scored.jsonl")
    assert len(scored) == 4 and all(isinstance(row["judgment"], str) for row in scored)
    metrics = json.loads((output_dir(config) / "_manifest.json").read_text())["metrics"]
    assert 0.0 <= metrics["judge_parse_rate"] <= 1.0

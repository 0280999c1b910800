"""A conversational loop through the stages: acquire writes the prompt's messages, select writes TRL's
conversational datasets from them, GRPO's reward reads conversational rollouts; a text loop is unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from sil_stages.core.settings import Scorer
from sil_stages.optimize.methods.rewards import reward_function
from tests.chat_model import build_tiny_chat_model
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl

SYSTEM = "Be brief."
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def _run(stage: str, config: dict[str, Any]) -> int:
    return main([stage, "--config", json.dumps(config)])


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, *_user(text)]


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))


@pytest.mark.slow
def test_a_chat_loops_acquire_writes_the_conversation_and_the_assistant_turns_content(
    tmp_path: Path, stage_config: StageConfig, tiny_chat_model: Path
) -> None:
    prompts = [{"messages": _user("1+2="), "answer": "3"}, {"prompt": "3+4=", "answer": "7"}]
    config = stage_config(
        "acquire",
        model_uri=tiny_chat_model.as_uri(),
        prompts_uri=write_jsonl(tmp_path / "prompts.jsonl", prompts).as_uri(),
        samples_per_prompt=3,
        sampling={"temperature": 1.0, "max_new_tokens": 8},
        chat={"chat_template": "always", "system_prompt": SYSTEM},
    )
    assert _run("acquire", config) == 0
    samples = read_jsonl(output_dir(config) / "samples.jsonl")
    assert [(s["prompt"], s["messages"], s["answer"]) for s in samples] == [
        ("1+2=", _conversation("1+2="), "3"),
        ("3+4=", _conversation("3+4="), "7"),
    ]
    completions = [c for s in samples for c in s["completions"]]
    assert len(completions) == 6
    assert not any(token in c for c in completions for token in TEMPLATE_TOKENS)


@pytest.mark.slow
def test_conversations_for_a_loop_that_reads_raw_text_fail_acquire_before_generation(
    tmp_path: Path, stage_config: StageConfig, tiny_chat_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config(
        "acquire",
        model_uri=tiny_chat_model.as_uri(),
        prompts_uri=write_jsonl(tmp_path / "prompts.jsonl", [{"messages": _user("1+2=")}]).as_uri(),
        chat={"chat_template": "never"},
    )
    assert _run("acquire", config) == 2
    assert "record 1 has `messages`, but the model reads raw text" in capsys.readouterr().err
    assert not (output_dir(config) / "_manifest.json").exists()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "1+2=", "messages": _user("1+2=")}, "record 2 of .* has both `prompt` and `messages`"),
        ({"messages": [{"role": "user", "text": "1+2="}]}, r"record 2 of .*: messages\[0\] must be an object"),
    ],
)
def test_a_bad_prompt_record_fails_acquire_naming_file_and_record_before_any_model_loads(
    tmp_path: Path, stage_config: StageConfig, record: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config(
        "acquire",
        model_uri=(tmp_path / "no-model").as_uri(),
        prompts_uri=write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "0+0="}, record]).as_uri(),
    )
    assert _run("acquire", config) == 2
    assert re.search(f"prompts_uri: {message}", capsys.readouterr().err)


CHAT_SAMPLES = [
    {"prompt": "2+2=", "messages": _conversation("2+2="), "completions": ["4", "5", "4"], "answer": "4"},
    {"prompt": "3+3=", "messages": _conversation("3+3="), "completions": ["7", "8"], "answer": "6"},
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            "prompt-completion",
            [{"prompt": _conversation("2+2="), "completion": [{"role": "assistant", "content": "4"}]}],
        ),
        (
            "preference",
            [
                {
                    "prompt": _conversation("2+2="),
                    "chosen": [{"role": "assistant", "content": "4"}],
                    "rejected": [{"role": "assistant", "content": "5"}],
                }
            ],
        ),
    ],
)
def test_select_writes_conversational_training_data_for_a_chat_loop(
    tmp_path: Path, stage_config: StageConfig, data: str, expected: list[dict[str, Any]]
) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", CHAT_SAMPLES).as_uri()
    config = stage_config("select", samples_uri=samples, data=data, keep={"dedupe": {"method": "exact"}})
    assert _run("select", config) == 0
    assert read_jsonl(output_dir(config) / "train.jsonl") == expected
    scored = read_jsonl(output_dir(config) / "scored.jsonl")
    assert [row["prompt"] for row in scored] == ["2+2="] * 3 + ["3+3="] * 2, "people read the question as text"


def test_select_gives_grpo_the_prompt_messages_and_the_record(tmp_path: Path, stage_config: StageConfig) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", CHAT_SAMPLES).as_uri()
    config = stage_config("select", samples_uri=samples, data="prompt-only")
    assert _run("select", config) == 0
    rows = read_jsonl(output_dir(config) / "train.jsonl")
    assert [row["prompt"] for row in rows] == [_conversation("2+2="), _conversation("3+3=")]
    assert json.loads(rows[0]["record"])["answer"] == "4"


def test_the_reward_of_conversational_rollouts_is_the_reward_of_their_content() -> None:
    reward = reward_function(Scorer())
    records = [json.dumps({"prompt": "2+2=", "answer": "4"})] * 2 + [json.dumps({"prompt": "3+3=", "answer": "6"})]
    prompts = [_conversation("2+2=")] * 2 + [_conversation("3+3=")]
    completions = [[{"role": "assistant", "content": text}] for text in ("4", "5", "6")]
    assert reward(prompts=prompts, completions=completions, record=records) == [1.0, 0.0, 1.0]

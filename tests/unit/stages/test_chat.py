"""Chat templates: the one formatting function, its validation, and what the stages and TRL make of it, with the
chat demo's real byte-level BPE tokenizer (ChatML special tokens and template, examples/arithmetic-chat)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sil_stages.core.chat import (
    PromptFormat,
    check_messages,
    check_prompt_record,
    content_text,
    conversation,
    end_of_turn_ids,
    format_prompt,
    prompt_text,
)
from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import ChatFormat
from tests.chat_model import build_tiny_chat_model, chat_example

STAGES = Path(__file__).resolve().parents[3] / "stages" / "sil_stages"
SYSTEM = "Be brief."


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return chat_example().build_tokenizer()


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer: Any) -> Any:
    """The same tokenizer without a chat template."""
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))


def chatml(*turns: tuple[str, str], generation: bool = True) -> str:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + ("<|im_start|>assistant\n" if generation else "")


@pytest.mark.parametrize(
    ("prompt", "settings", "expected"),
    [
        ("1+2=", ChatFormat(), chatml(("user", "1+2="))),
        ("1+2=", ChatFormat(chat_template="always"), chatml(("user", "1+2="))),
        ("1+2=", ChatFormat(system_prompt=SYSTEM), chatml(("system", SYSTEM), ("user", "1+2="))),
        ("1+2=", ChatFormat(chat_template="never", system_prompt=SYSTEM), "1+2="),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "1+2="},
            ],
            ChatFormat(system_prompt=SYSTEM),
            chatml(("system", SYSTEM), ("user", "hi"), ("assistant", "yo"), ("user", "1+2=")),
        ),
        (
            [{"role": "system", "content": "Mine."}, {"role": "user", "content": "1+2="}],
            ChatFormat(system_prompt=SYSTEM),
            chatml(("system", "Mine."), ("user", "1+2=")),
        ),
    ],
    ids=["text-auto", "text-always", "system-prompt", "never-raw", "multi-turn", "own-system-turn-kept"],
)
def test_format_prompt_renders_the_conversation_in_the_chat_template_with_the_generation_prompt(
    tokenizer: Any, prompt: Any, settings: ChatFormat, expected: str
) -> None:
    assert format_prompt(tokenizer, prompt, settings) == expected


def test_a_tokenizer_without_a_template_reads_raw_text_under_auto_and_is_refused_under_always(
    plain_tokenizer: Any,
) -> None:
    assert format_prompt(plain_tokenizer, "1+2=", ChatFormat(system_prompt=SYSTEM)) == "1+2="
    with pytest.raises(StageInputError, match=r"spec\.model\.chatTemplate is always.*no chat_template"):
        PromptFormat.of(plain_tokenizer, ChatFormat(chat_template="always"))


@pytest.mark.parametrize("settings", [ChatFormat(chat_template="never"), ChatFormat()])
def test_a_conversation_for_a_model_that_reads_raw_text_is_refused(
    tokenizer: Any, plain_tokenizer: Any, settings: ChatFormat
) -> None:
    reader = tokenizer if settings.chat_template == "never" else plain_tokenizer
    with pytest.raises(StageInputError, match=r"`messages`.*reads raw text.*chatTemplate"):
        format_prompt(reader, [{"role": "user", "content": "1+2="}], settings)


def test_formatting_a_conversation_again_adds_no_second_system_turn(tokenizer: Any) -> None:
    """acquire writes the conversation with the system prompt; select, GRPO and a later format reuse it: once."""
    settings = ChatFormat(system_prompt=SYSTEM)
    once = conversation("1+2=", settings)
    assert conversation(once, settings) == once
    text = format_prompt(tokenizer, once, settings)
    assert text.count("<|im_start|>system") == 1 and text.count("<|im_start|>assistant") == 1


def test_generation_stops_at_chatml_end_of_turn(tokenizer: Any, plain_tokenizer: Any) -> None:
    assert tokenizer.convert_ids_to_tokens(end_of_turn_ids(tokenizer)) == ["<|im_end|>"]
    assert PromptFormat.of(tokenizer, ChatFormat()).stop_ids == tuple(end_of_turn_ids(tokenizer))


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"answer": "3"}, r"record 1 of f\.jsonl has no `prompt` field \(nor `messages`\)"),
        ({"prompt": "1+2=", "messages": [{"role": "user", "content": "x"}]}, r"has both `prompt` and `messages`"),
        ({"prompt": ["1+2="]}, r"`prompt` must be a string"),
        ({"messages": "1+2="}, r"`messages` must be a non-empty list"),
        ({"messages": []}, r"`messages` must be a non-empty list"),
        ({"messages": [{"role": "user"}]}, r"messages\[0\] must be an object with exactly `role` and `content`"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"messages\[0\]\.role is 'bot'; expected one of system"),
        ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\]\.content must be a string"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            r"messages\[1\]: a system turn may only come first",
        ),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "last message"),
    ],
)
def test_a_bad_prompt_record_is_refused_naming_the_field_file_and_record(record: dict[str, Any], error: str) -> None:
    with pytest.raises(StageInputError, match=error) as raised:
        check_prompt_record(record, "prompts_uri: record 1 of f.jsonl")
    assert str(raised.value).startswith("prompts_uri: record 1 of f.jsonl")


def test_the_question_of_a_record_is_its_prompt_or_its_last_user_turn() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "q"},
    ]
    assert check_messages(messages, "x") == messages
    assert prompt_text({"prompt": "p"}) == "p"
    assert prompt_text({"messages": messages}) == "q"
    assert conversation("q", ChatFormat(system_prompt=SYSTEM))[0] == {"role": "system", "content": SYSTEM}
    assert content_text([{"role": "assistant", "content": "42"}]) == "42"


def test_no_stage_module_but_the_chat_module_applies_a_chat_template() -> None:
    """Every model reads its prompt through sil_stages.core.chat: a second place applying a template (or reading
    the tokenizer's template) would let training and evaluation prompts drift apart."""
    pattern = re.compile(r"apply_chat_template|tokenizer\.chat_template\b")
    offenders = [
        str(path.relative_to(STAGES))
        for path in sorted(STAGES.rglob("*.py"))
        if path.name != "chat.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert pattern.search((STAGES / "core" / "chat.py").read_text(encoding="utf-8"))


def _sft_examples(tiny_chat_model: Path, rows: list[dict[str, Any]], tmp_path: Path) -> tuple[Any, list[Any]]:
    """TRL's SFTTrainer on conversational prompt-completion rows, as the sft method builds it: the tokenizer and
    the collated batch of every row."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sil_stages.core.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_chat_model), padding_side="right")
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        completion_only_loss=True,
        packing=False,
        max_length=96,
        report_to="none",
        bf16=False,
        use_cpu=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_chat_model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    return tokenizer, [trainer.data_collator([example]) for example in examples]


def test_sft_on_conversational_rows_puts_the_loss_on_the_assistant_turn_only_and_the_template_once(
    tiny_chat_model: Path, tmp_path: Path
) -> None:
    settings = ChatFormat(system_prompt=SYSTEM)
    rows = [
        {"prompt": conversation(p, settings), "completion": [{"role": "assistant", "content": a}]}
        for p, a in [("12+30=", "42"), ("7+8=", "15")]
    ]
    tokenizer, batches = _sft_examples(tiny_chat_model, rows, tmp_path)
    for row, batch in zip(rows, batches, strict=True):
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        trained = [token for token, label in zip(ids, labels, strict=True) if label != -100]
        answer = row["completion"][0]["content"]
        assert tokenizer.decode(trained) == answer + "<|im_end|>\n", "labels: the assistant turn's content and end"
        text = tokenizer.decode(ids)
        assert text == format_prompt(tokenizer, row["prompt"], settings) + answer + "<|im_end|>\n"
        assert text.count("<|im_start|>system") == 1 and text.count("<|im_start|>assistant") == 1


def test_evaluation_prompts_are_formatted_exactly_like_the_training_prompts(
    tiny_chat_model: Path, tmp_path: Path
) -> None:
    """Evaluate's engine formats a held-out record (text or messages) into the very tokens SFT trained on before the
    completion, and GRPO's rollouts are prompted with (TRL renders select's conversational rows itself)."""
    from trl.data_utils import apply_chat_template as trl_apply_chat_template

    from sil_stages.core.engines import make_engine
    from sil_stages.core.generation import TransformersEngine

    settings = ChatFormat(system_prompt=SYSTEM)
    engine = make_engine("transformers", str(tiny_chat_model), batch_size=2, progress="test", chat=settings)
    assert isinstance(engine, TransformersEngine)
    for record in ({"prompt": "12+30="}, {"messages": [{"role": "user", "content": "12+30="}]}):
        evaluation = engine.format.text(record.get("messages") or record["prompt"])
        trained = conversation(record.get("messages") or record["prompt"], settings)
        tokenizer, [batch] = _sft_examples(
            tiny_chat_model, [{"prompt": trained, "completion": [{"role": "assistant", "content": "42"}]}], tmp_path
        )
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        prompt_ids = ids[: next(i for i, label in enumerate(labels) if label != -100)]
        assert prompt_ids == tokenizer(evaluation, add_special_tokens=False)["input_ids"]
        assert trl_apply_chat_template({"prompt": trained}, tokenizer)["prompt"] == evaluation


def test_a_chat_model_samples_the_assistant_turns_content_without_template_tokens(tiny_chat_model: Path) -> None:
    from sil_stages.core.engines import make_engine
    from sil_stages.core.generation import SamplingRequest

    engine = make_engine("transformers", str(tiny_chat_model), batch_size=4, progress="test", chat=ChatFormat())
    assert engine.format.conversational
    samples = engine.generate(["1+2=", [{"role": "user", "content": "3+4="}]], SamplingRequest(n=4, max_new_tokens=12))
    texts = [text for group in samples for text in group]
    assert len(texts) == 8
    assert not any(marker in text for text in texts for marker in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))


def test_always_with_a_model_without_a_template_fails_when_the_model_is_loaded(tmp_path: Path) -> None:
    from sil_stages.core.engines import make_engine
    from tests.unit.stages.conftest import build_tiny_model

    plain = str(build_tiny_model(tmp_path / "plain"))
    with pytest.raises(StageInputError, match=r"spec\.model\.chatTemplate is always"):
        make_engine("transformers", plain, batch_size=1, progress="test", chat=ChatFormat(chat_template="always"))

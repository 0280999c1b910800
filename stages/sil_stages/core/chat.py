"""The one place a prompt becomes what a model reads: raw text, or a conversation in the model's chat template.

A prompt record carries either `prompt` (text) or `messages` (a list of `{role, content}`, optionally with a
system turn, ending with a user turn). The loop's `spec.model.chatTemplate` says how a model reads it:
- text (no template, or `never`): the `prompt` string as is, the model continues it;
- conversational (`always`, or `auto` with a tokenizer that has a chat_template): the conversation (a `prompt`
  becomes one user turn; `spec.model.systemPrompt` goes first when there is no system turn) in the tokenizer's
  chat template with the generation prompt, the model writes the assistant turn. Generation stops at the
  template's end-of-turn token and the completion is the assistant turn's content only (`end_of_turn_ids`).

Every engine formats its prompts here (acquire, select's judge, Self-Instruct, self-refine, evaluate), the reward
model reads its conversation from here, and select writes the same conversations into conversational datasets,
which TRL renders with the same template (SFT, DPO, GRPO). tests/unit/stages/test_chat.py proves that nothing else
in the stages applies a chat template, so a chat model is prompted at evaluation exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import ChatFormat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]
Prompt = str | Sequence[Mapping[str, str]]
"""What an engine is asked to continue: a text prompt, or a conversation (messages)."""

ROLES = ("system", "user", "assistant")
MODE_FIELD = "spec.model.chatTemplate"
SENTINEL = "\u2063SIL\u2063"
"""Content of a probe assistant turn: what the template writes after it is its end of turn."""


def check_messages(value: Any, where: str) -> list[Message]:
    """`value` as a message list, or a StageInputError naming `where` and what is wrong: a non-empty list of
    `{role, content}` objects (strings; role one of system, user, assistant), a system turn only first, the last
    turn a user's (the model answers it)."""
    if not isinstance(value, list) or not value:
        raise StageInputError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    messages: list[Message] = []
    for index, message in enumerate(value):
        at = f"{where}: messages[{index}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise StageInputError(f"{at} must be an object with exactly `role` and `content`, got {message!r}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise StageInputError(f"{at}.role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise StageInputError(f"{at}.content must be a string, got {type(content).__name__}")
        if role == "system" and index != 0:
            raise StageInputError(f"{at}: a system turn may only come first")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise StageInputError(f"{where}: the last message must be the user's (the model writes the answer)")
    return messages


def check_prompt_record(record: Mapping[str, Any], where: str) -> None:
    """A record has exactly one of `prompt` (a string) and `messages` (a valid message list)."""
    has_prompt, has_messages = "prompt" in record, "messages" in record
    if not has_prompt and not has_messages:
        raise StageInputError(f"{where} has no `prompt` field (nor `messages`); every record needs exactly one")
    if has_prompt and has_messages:
        raise StageInputError(f"{where} has both `prompt` and `messages`; every record needs exactly one")
    if has_prompt and not isinstance(record["prompt"], str):
        raise StageInputError(f"{where}: `prompt` must be a string (a conversation goes in `messages`)")
    if has_messages:
        check_messages(record["messages"], where)


def check_prompt_records(records: Iterable[Mapping[str, Any]], *, uri: str, field: str) -> None:
    """Every record of `uri` (read for config field `field`) is a valid prompt record; checked before any model."""
    for number, record in enumerate(records, start=1):
        check_prompt_record(record, f"{field}: record {number} of {uri}")


def model_prompt(record: Mapping[str, Any]) -> Prompt:
    """What a model is asked about a record: its `messages` when it has them, else its `prompt` text."""
    messages = record.get("messages")
    if messages is not None:
        return list(messages)
    return str(record["prompt"])


def prompt_text(record: Mapping[str, Any]) -> str:
    """The record's question as text, for verifiers, scorers, dedupe and reports: `prompt`, or the content of the
    last user turn of `messages`."""
    if "prompt" in record:
        return str(record["prompt"])
    return text_of(record["messages"])


def text_of(prompt: Prompt) -> str:
    """A prompt as text: itself, or its last user turn's content."""
    if isinstance(prompt, str):
        return prompt
    users = [message["content"] for message in prompt if message.get("role") == "user"]
    return users[-1] if users else ""


def content_text(value: Any) -> str:
    """A dataset field as plain text (dedupe, contamination n-grams): a string as is, messages' contents joined."""
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return str(value)


def conversation(prompt: Prompt, settings: ChatFormat) -> list[Message]:
    """The messages of a prompt: a text becomes one user turn; the system prompt goes first unless one is there."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if settings.system_prompt is not None and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": settings.system_prompt})
    return messages


def assistant_turn(completion: str) -> list[Message]:
    """A completion as the conversational datasets' completion (TRL's format): one assistant message."""
    return [{"role": "assistant", "content": completion}]


def has_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def is_conversational(tokenizer: PreTrainedTokenizerBase, settings: ChatFormat, *, model: str = "the model") -> bool:
    """Whether prompts go through the chat template; `always` with a tokenizer without one is a StageInputError
    (raised when the model is loaded, before it generates)."""
    if settings.chat_template == "never":
        return False
    if settings.chat_template == "always" and not has_template(tokenizer):
        raise StageInputError(
            f"{MODE_FIELD} is always, but the tokenizer of {model} has no chat_template; give the checkpoint one "
            "(tokenizer_config.json's chat_template) or set chatTemplate to auto or never"
        )
    return has_template(tokenizer)


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, settings: ChatFormat) -> str:
    """The text a model continues for `prompt`: the one formatting function of every stage."""
    return PromptFormat.of(tokenizer, settings).text(prompt)


def format_conversation(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> str:
    """A whole exchange as a reward model reads it: the conversation in the tokenizer's chat template (special
    tokens included, as TRL's RewardTrainer tokenizes conversations) when it has one, else prompt + completion."""
    if not has_template(tokenizer):
        return prompt + completion
    messages = [{"role": "user", "content": prompt}, *assistant_turn(completion)]
    text: Any = tokenizer.apply_chat_template(messages, tokenize=False)
    return str(text)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids that end an assistant turn: the special token the template writes right after an assistant
    message's content (ChatML's `<|im_end|>`), and the tokenizer's EOS. Generation stops at any of them."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if not has_template(tokenizer):
        return ids
    rendered: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}, *assistant_turn(SENTINEL)], tokenize=False
    )
    after = str(rendered).split(SENTINEL, 1)[-1]
    encoded: Any = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    for token in list(encoded)[:2]:
        if int(token) in special and int(token) not in ids:
            ids.append(int(token))
            break
    return ids


@dataclass(frozen=True)
class PromptFormat:
    """A tokenizer and the loop's chat settings, resolved once when the model is loaded."""

    tokenizer: Any
    settings: ChatFormat
    conversational: bool
    stop_ids: tuple[int, ...]
    """Where generation stops: the end-of-turn tokens (conversational), or EOS."""

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, settings: ChatFormat, *, model: str = "the model") -> PromptFormat:
        conversational = is_conversational(tokenizer, settings, model=model)
        stops = (
            end_of_turn_ids(tokenizer)
            if conversational
            else ([] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)])
        )
        return cls(tokenizer, settings, conversational, tuple(stops))

    def text(self, prompt: Prompt) -> str:
        """What the model continues: the raw text, or the conversation in the chat template with the generation
        prompt; a conversation for a text loop is a StageInputError."""
        if not self.conversational:
            if not isinstance(prompt, str):
                raise StageInputError(
                    f"a prompt record has `messages`, but the model reads raw text ({MODE_FIELD} is "
                    f"{self.settings.chat_template} and its tokenizer "
                    f"{'has a chat_template' if has_template(self.tokenizer) else 'has no chat_template'}); "
                    "give the records a `prompt`, or use a model with a chat template"
                )
            return prompt
        rendered: Any = self.tokenizer.apply_chat_template(
            conversation(prompt, self.settings), tokenize=False, add_generation_prompt=True
        )
        return str(rendered)


def lm_eval_arguments(conversational: bool, system_prompt: str | None) -> dict[str, Any]:
    """How lm-evaluation-harness must render its task prompts to read them as every stage does: in the chat
    template (`apply_chat_template`, lm-eval's own use of the tokenizer's template) with the loop's system prompt
    in a conversational loop, raw otherwise. lm-eval builds its task prompts itself, so this is the one place a
    template is applied outside this module's functions; tests/unit/stages/test_harness.py checks that its
    rendering equals `format_prompt`'s."""
    if not conversational:
        return {"apply_chat_template": False, "system_instruction": None}
    return {"apply_chat_template": True, "system_instruction": system_prompt}

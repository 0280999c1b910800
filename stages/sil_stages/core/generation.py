"""The generation interface shared by acquire and evaluate, and its transformers engine.

Both stages need one thing: for each prompt, `n` completions at some temperature. Hiding the engine behind
`GenerationEngine` lets the CPU path (transformers `generate`) and the GPU path (vLLM, `vllm_engine`) be
swapped by one config field, `engine`, and lets tests fake generation entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sil_stages.core.chat import Prompt, PromptFormat
from sil_stages.core.settings import ChatFormat

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingRequest:
    """How to sample; temperature 0 means greedy decoding (then `n` identical completions are pointless)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0


class GenerationEngine(Protocol):
    format: PromptFormat
    """How the engine's model reads a prompt (`sil_stages.core.chat`): text, or its chat template."""

    def generate(self, prompts: Sequence[Prompt], request: SamplingRequest) -> list[list[str]]:
        """For each prompt (a text, or messages), `request.n` completions: the text after the prompt, special tokens
        dropped; with a chat template the prompt is formatted by `sil_stages.core.chat` and the completion is the
        assistant turn's content, generation stopping at the end of the turn."""
        ...


@dataclass(frozen=True)
class TokenStats:
    """A model's view of one given completion after its prompt (teacher forcing)."""

    logprob: float
    """Sum over the completion's tokens of log p(token | prompt, earlier tokens), in nats."""
    entropy: float
    """Sum over the same positions of the entropy of the next-token distribution, in nats."""
    tokens: int


@runtime_checkable
class TokenScorer(Protocol):
    """An engine that can also score given completions (the KL and entropy guards need it)."""

    def token_stats(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[TokenStats]: ...


class TransformersEngine:
    """Batched `generate` with left padding: each batch of prompts yields `n` sequences per prompt."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        progress: str = "generate",
        chat: ChatFormat | None = None,
        name: str = "the model",
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.format = PromptFormat.of(tokenizer, chat or ChatFormat(), model=name)
        """How this model reads a prompt; `format.conversational` says whether through its chat template."""
        self._batch_size = max(1, batch_size)
        self._progress = progress

    @property
    def model(self) -> PreTrainedModel:
        """The loaded model, for what runs on it besides generation (evaluate's lm-eval tasks)."""
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    def generate(self, prompts: Sequence[Prompt], request: SamplingRequest) -> list[list[str]]:
        # Imported here, as torch is: the operator side imports this module (through the scorer registry) in an
        # image that has neither (images/operator.Dockerfile; tests/unit/test_import_boundaries.py).
        import torch
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        torch.manual_seed(request.seed)
        greedy = request.temperature <= 0.0
        results: list[list[str]] = []
        batches = range(0, len(prompts), self._batch_size)
        for start in tqdm(batches, desc=self._progress, unit="batch", leave=False):
            batch = [self.format.text(prompt) for prompt in prompts[start : start + self._batch_size]]
            inputs = self._tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self._model.device)
            model: Any = self._model
            with torch.no_grad():
                output = model.generate(
                    **inputs,
                    do_sample=not greedy,
                    temperature=None if greedy else request.temperature,
                    top_p=None if greedy else request.top_p,
                    top_k=None if greedy else 0,
                    num_return_sequences=request.n,
                    max_new_tokens=request.max_new_tokens,
                    eos_token_id=list(self.format.stop_ids)
                    if self.format.conversational
                    else self._tokenizer.eos_token_id,
                    pad_token_id=self._tokenizer.pad_token_id,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            texts = self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for index in range(len(batch)):
                results.append(texts[index * request.n : (index + 1) * request.n])
        return results

    def token_stats(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[TokenStats]:
        """Log-probability and next-token entropy of each completion given its prompt, in one forward pass per batch.

        Prompt and completion are tokenized apart and joined, so two models with one tokenizer score the very same
        token sequence (what a KL estimate between them needs).
        """
        import torch

        tokenizer: Any = self._tokenizer
        model: Any = self._model
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if len(prompts) != len(completions):
            raise ValueError(f"token_stats: {len(prompts)} prompts but {len(completions)} completions")
        stats: list[TokenStats] = []
        for start in range(0, len(prompts), self._batch_size):
            end = start + self._batch_size
            texts = [self.format.text(prompt) for prompt in prompts[start:end]]
            pairs = list(zip(texts, completions[start:end], strict=True))
            encoded = [
                (
                    tokenizer(prompt, add_special_tokens=False)["input_ids"],
                    tokenizer(completion, add_special_tokens=False)["input_ids"],
                )
                for prompt, completion in pairs
            ]
            width = max(len(p) + len(c) for p, c in encoded)
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            targets = torch.zeros((len(encoded), width), dtype=torch.bool)
            for row, (prompt_ids, completion_ids) in enumerate(encoded):
                sequence = list(prompt_ids) + list(completion_ids)
                ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
                attention[row, : len(sequence)] = 1
                targets[row, len(prompt_ids) : len(sequence)] = True
            ids, attention, targets = ids.to(model.device), attention.to(model.device), targets.to(model.device)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=attention).logits.float()
            # Position t predicts token t+1: a completion token at t is scored by the logits at t-1.
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            scored = targets[:, 1:]
            token_logprob = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            entropy = -(logprobs.exp() * logprobs).sum(-1)
            for row in range(len(encoded)):
                mask = scored[row]
                stats.append(
                    TokenStats(
                        logprob=float(token_logprob[row][mask].sum()),
                        entropy=float(entropy[row][mask].sum()),
                        tokens=int(mask.sum()),
                    )
                )
        return stats

"""`reward-model`: a trained reward model (a one-label sequence classifier, as TRL's RewardTrainer writes) scores
each prompt + completion; its logit is the score (best-of-n / rejection sampling with a learned reward).

The checkpoint's config is checked before any weights load: transformers would load a causal LM checkpoint as a
sequence classifier without complaint, with a freshly initialised (random) score head, and every score would be
noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sil_stages.core import scorers
from sil_stages.core.chat import format_conversation, has_template
from sil_stages.core.errors import StageInputError
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext, flat, regroup
from sil_stages.select.scorers.model_uri import resolve_scorer_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NAME = scorers.REWARD_MODEL.name


def check_reward_model_config(path: str, *, field: str) -> None:
    """Raises StageInputError unless the checkpoint at `path` is a one-label sequence classifier (config only)."""
    from transformers import AutoConfig

    try:
        config: Any = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise StageInputError(
            f"{field}: cannot read a model config from {path} ({type(error).__name__}: {error}); point it at a "
            "save_pretrained directory of a reward model"
        ) from error
    architectures = list(config.architectures or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        found = ", ".join(architectures) if architectures else "no architecture"
        raise StageInputError(
            f"{field}: {path} is not a reward model: its config names {found}, not a *ForSequenceClassification "
            "model; train one with TRL's RewardTrainer (a one-label AutoModelForSequenceClassification) and point "
            f"{field} at it"
        )
    if config.num_labels != 1:
        raise StageInputError(
            f"{field}: {path} is a sequence classifier with num_labels={config.num_labels}; a reward model has "
            "exactly one label (its logit is the reward), as TRL's RewardTrainer writes"
        )


def reward_text(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> str:
    """The text the reward model reads: the conversation in its chat template, else prompt + completion (the one
    formatting of `sil_stages.core.chat`)."""
    return format_conversation(tokenizer, prompt, completion)


class RewardModelScorer:
    def __init__(self, context: ScorerContext) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from sil_stages.core.models import load_tokenizer

        field = f"{context.field}.model"
        uri = context.settings.model
        if uri is None:
            raise StageInputError(
                f"{field}: scorer type reward-model needs a reward model and none is set; set {field} to a "
                "one-label sequence-classification checkpoint (e.g. one trained with TRL's RewardTrainer)"
            )
        path = resolve_scorer_model(context, uri, field=field)
        check_reward_model_config(path, field=field)
        # Right padding keeps every real token at the position it has unpadded, so a completion's score does not
        # depend on what it is batched with.
        self._tokenizer = load_tokenizer(path, padding_side="right")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model: Any = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        # The model reads its score at the last token that is not `pad_token_id`; it must be the id we pad with.
        pad_id = self._tokenizer.pad_token_id
        model.config.pad_token_id = pad_id
        model.config.get_text_config().pad_token_id = pad_id
        model.to(device)
        model.eval()
        self._model = model
        self._batch_size = context.settings.batch_size
        self._values: list[float] = []

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        # Imported here: the operator side imports the scorer registry without the ML stack (test_import_boundaries).
        import torch
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        texts = [reward_text(self._tokenizer, group.prompt, completion) for group, completion in flat(groups)]
        # A chat template writes its own special tokens; a plain text gets the tokenizer's (BOS), as in training.
        special_tokens = not has_template(self._tokenizer)
        values: list[float] = []
        batches = range(0, len(texts), self._batch_size)
        for start in tqdm(batches, desc="reward-model", unit="batch", leave=False):
            batch = texts[start : start + self._batch_size]
            inputs = self._tokenizer(batch, add_special_tokens=special_tokens, padding=True, return_tensors="pt")
            inputs = inputs.to(self._model.device)
            with torch.inference_mode():
                logits = self._model(**inputs).logits
            values.extend(float(value) for value in logits[:, 0].float().tolist())
        self._values.extend(values)
        return regroup(groups, [Score(value) for value in values])

    def report(self) -> dict[str, float]:
        if not self._values:
            return {}
        return {
            "reward_mean": statistics.fmean(self._values),
            "reward_std": statistics.pstdev(self._values),
            "reward_min": min(self._values),
            "reward_max": max(self._values),
        }


def build(context: ScorerContext) -> Scorer:
    return RewardModelScorer(context)

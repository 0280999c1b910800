"""The best checkpoint of a training run (`optimize.checkpointSelection`): early stopping by the loop's own scorer.

Training longer is not always better (a self-generated training set is small and narrow, and the model overfits it
or drifts); the last step is only the default candidate. With checkpoint selection, a trainer callback scores the
model in training every `everySteps` optimizer steps (else at the end of each epoch) and at the last step: greedy
answers to the validation prompts (`validationUri`, a file of its own that the spec refuses to be an evaluation
dataset, so the candidate is never chosen on the data that judges it), scored by `select.scorer` exactly as select
scores samples; the score is their mean (a scorer that gives no score counts 0). The best-scored step's trainable
weights are kept in memory (on CPU; with LoRA only the adapter's), and after training they are put back into the
model before it is saved, so evaluate receives the best step, not the last. The earliest step wins ties (the same
score with fewer updates away from the init model).

One method-independent callback (`finish` in `methods.training` adds it to the sft, dpo and grpo trainers alike).
Under several processes only global rank 0 scores, keeps and restores (it alone saves the candidate); the other ranks
wait for it at the next step's gradient all-reduce. DeepSpeed shards the weights and is refused.

The optimize manifest records every score (`checkpoint_selection/step_<n>`), the chosen step and its score, and the
last step's score (`checkpoint_selection/chosen_step`, `/chosen_score`, `/last_score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sil_stages.core.chat import check_prompt_records, model_prompt, prompt_text
from sil_stages.core.contract import OptimizeConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.records import Record, read_jsonl, require_field
from sil_stages.core.scoring import EXACT_MATCH
from sil_stages.core.settings import ChatFormat, CheckpointSelection
from sil_stages.core.settings import Scorer as ScorerSettings
from sil_stages.core.store import Store

if TYPE_CHECKING:
    import torch

PREFIX = "checkpoint_selection/"
FIELD = "checkpointSelection"


@dataclass(frozen=True)
class StepScore:
    step: int
    score: float


def best_step(scores: Sequence[StepScore]) -> StepScore:
    """The best-scored step; the earliest of equal scores."""
    if not scores:
        raise ValueError("no step was scored")
    return max(scores, key=lambda s: (s.score, -s.step))


def selection_metrics(scores: Sequence[StepScore]) -> dict[str, float]:
    """The manifest's record: every step's score, the chosen step and score, the last step's score."""
    chosen = best_step(scores)
    metrics = {f"{PREFIX}step_{s.step}": s.score for s in scores}
    metrics[f"{PREFIX}chosen_step"] = float(chosen.step)
    metrics[f"{PREFIX}chosen_score"] = chosen.score
    metrics[f"{PREFIX}last_score"] = max(scores, key=lambda s: s.step).score
    return metrics


def due(step: int, every_steps: int | None, *, epoch_end: bool) -> bool:
    """Whether the model is scored now: every N steps, else at each epoch's end."""
    if every_steps is None:
        return epoch_end
    return not epoch_end and step > 0 and step % every_steps == 0


def check(config: OptimizeConfig) -> None:
    """Settings that cannot work, refused before any model is loaded."""
    if config.checkpoint_selection is None:
        return
    if config.distributed.deepspeed is not None:
        raise StageInputError(
            f"{FIELD}: not with distributed.deepspeed (its weights are sharded across ranks); remove one of them"
        )
    if config.scorer.type == "majority-vote":
        raise StageInputError(
            f"{FIELD}: select.scorer majority-vote cannot judge one greedy answer (it always agrees with itself); "
            "use a verifier, reward model or judge, or remove checkpointSelection"
        )


def read_validation(store: Store, settings: CheckpointSelection, scorer: ScorerSettings | None = None) -> list[Record]:
    """The validation records (the first `limit`), each with a prompt, and with an `answer` when the scorer is the
    exact-match verifier (which would otherwise fail at the first scoring, mid-training)."""
    field_name = f"{FIELD}.validationUri"
    records = read_jsonl(store, settings.validation_uri, field=field_name)
    if settings.limit is not None:
        records = records[: settings.limit]
    if not records:
        raise StageInputError(f"{field_name}: {settings.validation_uri} holds no records")
    check_prompt_records(records, uri=settings.validation_uri, field=field_name)  # a `prompt` or `messages`
    if scorer is not None and scorer.type == "verifier" and scorer.verifier == EXACT_MATCH:
        require_field(records, "answer", uri=settings.validation_uri, field=field_name)
    return records


@dataclass
class Validator:
    """Scores a model: greedy answers to the validation prompts, judged by the loop's scorer, averaged."""

    records: list[Record]
    scorer: Any
    tokenizer: Any
    max_new_tokens: int
    batch_size: int
    chat: ChatFormat = field(default_factory=ChatFormat)
    """spec.model's chat settings: the validation prompts are formatted as every other stage formats its prompts."""

    def score(self, model: Any) -> float:
        from sil_stages.core.generation import SamplingRequest, TransformersEngine
        from sil_stages.select.scorers import PromptSamples

        was_training = model.training
        model.eval()
        try:
            engine = TransformersEngine(
                model, self.tokenizer, batch_size=self.batch_size, progress="validate", chat=self.chat
            )
            request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
            outputs = engine.generate([model_prompt(r) for r in self.records], request)
        finally:
            model.train(was_training)
        groups = [PromptSamples(prompt_text(r), (out[0],), r) for r, out in zip(self.records, outputs, strict=True)]
        values = [score.value or 0.0 for scores in self.scorer.score(groups) for score in scores]
        return sum(values) / len(values)


@dataclass
class Selection:
    """The scores so far and the best step's trainable weights (on CPU)."""

    validator: Validator
    every_steps: int | None
    is_main: bool
    scores: list[StepScore] = field(default_factory=list)
    best: dict[str, torch.Tensor] = field(default_factory=dict)

    def record(self, step: int, model: Any) -> None:
        """Scores the model at this step (rank 0 only); keeps its weights when it is the best so far."""
        if not self.is_main or any(s.step == step for s in self.scores):
            return
        score = self.validator.score(model)
        previous = best_step(self.scores) if self.scores else None
        self.scores.append(StepScore(step, score))
        if previous is None or score > previous.score:
            self.best = {
                name: param.detach().to("cpu", copy=True)
                for name, param in model.named_parameters()
                if param.requires_grad
            }

    def restore_best(self, model: Any) -> dict[str, float]:
        """Puts the best step's weights back into the model (rank 0); the metrics of the choice."""
        import torch

        if not self.is_main or not self.scores:
            return {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.best:
                    param.copy_(self.best[name].to(param.device))
        return selection_metrics(self.scores)


def callback(selection: Selection) -> Any:
    """The transformers `TrainerCallback` that scores the model when due and at the end of training."""
    from transformers import TrainerCallback

    class SelectionCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            if due(state.global_step, selection.every_steps, epoch_end=False):
                selection.record(state.global_step, model)

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            if due(state.global_step, selection.every_steps, epoch_end=True):
                selection.record(state.global_step, model)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            selection.record(state.global_step, model)

    return SelectionCallback()


def attach(trainer: Any, config: OptimizeConfig, store: Store | None, model_path: str, seed: int) -> Selection | None:
    """Adds the selection callback to the trainer when `checkpointSelection` is set; the selection, else None."""
    settings = config.checkpoint_selection
    if settings is None:
        return None
    from sil_stages.core.models import load_tokenizer
    from sil_stages.optimize.launcher import process_state
    from sil_stages.select.scorers import ScorerContext, make_scorer

    if store is None:
        raise StageInputError(f"{FIELD}: the validation set needs the loop's store")
    validator = Validator(
        records=read_validation(store, settings, config.scorer),
        scorer=make_scorer(
            ScorerContext(
                settings=config.scorer,
                store=store,
                champion_uri=config.init_model_uri,
                seed=seed,
                engine="transformers",
                chat=config.chat,
            )
        ),
        tokenizer=load_tokenizer(model_path),
        max_new_tokens=settings.max_new_tokens,
        batch_size=config.hyperparameters.batch_size,
        chat=config.chat,
    )
    selection = Selection(validator, settings.every_steps, process_state().is_main)
    trainer.add_callback(callback(selection))
    return selection

"""What every method's training shares: TRL arguments from the hyperparameters, LoRA, saving, metrics.

A method builds its TRL trainer (`SFTTrainer`, `DPOTrainer`, `GRPOTrainer`) from `common_arguments` and
`peft_config`, and hands it to `finish`, which trains, saves the candidate (merging a LoRA adapter into a full
model, so evaluate, acquire and vLLM load it like any checkpoint; the adapter is saved beside it) and returns the
metrics: the stage's own (`train_examples`, `steps`, `train_loss`, `param_delta_l2`) and the trainer's logged ones
under `train/` (e.g. `train/rewards/margins`, `train/reward_std`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import Hyperparameters, Lora
from sil_stages.optimize.methods.base import TrainingJob

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

TRAINER_PREFIX = "train/"
"""Prefix of the trainer's own logged metrics in the manifest."""
NOT_METRICS = frozenset(
    {
        "epoch",
        "step",
        "total_flos",
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "step_time",
        "num_tokens",
    }
)


def use_bf16(hyperparameters: Hyperparameters) -> bool:
    """bf16 when asked for, or (None) when a CUDA device supports it; never on CPU."""
    import torch

    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if hyperparameters.bf16 is None:
        return supported
    if hyperparameters.bf16 and not supported:
        raise StageInputError("hyperparameters.bf16: true needs a CUDA device with bf16; leave it unset")
    return hyperparameters.bf16


def total_steps(examples: int, hyperparameters: Hyperparameters) -> int:
    """Optimizer steps the run will take (for the logging interval): max_steps, else epochs over the data."""
    if hyperparameters.max_steps is not None:
        return hyperparameters.max_steps
    per_step = hyperparameters.batch_size * hyperparameters.gradient_accumulation_steps
    return max(1, math.ceil(hyperparameters.epochs * math.ceil(examples / per_step)))


def common_arguments(job: TrainingJob, examples: int) -> dict[str, Any]:
    """The `TrainingArguments` every TRL config of this stage shares: the hyperparameters and the saving.

    DeepSpeed is not an argument here: `accelerate launch --use_deepspeed` (see `sil_stages.optimize.launcher`) hands
    its config to the trainer through accelerate, as TRL's examples do.
    """
    from sil_stages.optimize.trainer_checkpoints import save_arguments  # imports the store, which imports the methods

    hp: Hyperparameters = job.config.hyperparameters
    return {
        "output_dir": str(job.workdir / "trainer"),
        "learning_rate": hp.learning_rate,
        "num_train_epochs": hp.epochs,
        "per_device_train_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "max_steps": hp.max_steps if hp.max_steps is not None else -1,
        "warmup_steps": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "lr_scheduler_type": hp.lr_scheduler,
        "seed": job.seed,
        "data_seed": job.seed,
        "bf16": use_bf16(hp),
        "report_to": "none",
        **save_arguments(job.config.checkpoint_every_steps),
        "logging_steps": max(1, total_steps(examples, hp) // 10),
        "disable_tqdm": True,
    }


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """The distinct last names of the model's linear layers: what `lora.targetModules` can name."""
    import torch

    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    )


def check_target_modules(model: PreTrainedModel, lora: Lora) -> None:
    """Fails (exit 2) when a `lora.targetModules` entry matches no module, listing the names that would."""
    if "all-linear" in lora.target_modules:
        return
    names = {name for name, _ in model.named_modules()}
    for target in lora.target_modules:
        if not any(name == target or name.endswith("." + target) for name in names):
            candidates = ", ".join(linear_module_names(model))
            raise StageInputError(
                f"lora.targetModules: {target!r} matches no module of the model; use all-linear or some of: "
                f"{candidates}"
            )


def peft_config(job: TrainingJob, model: PreTrainedModel) -> Any:
    """The peft `LoraConfig` of `lora`, or None for a full fine-tune."""
    lora: Lora | None = job.config.lora
    if lora is None:
        return None
    from peft import LoraConfig

    check_target_modules(model, lora)
    targets: str | list[str] = "all-linear" if "all-linear" in lora.target_modules else list(lora.target_modules)
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def load_policy(job: TrainingJob) -> Any:
    """The init model (full precision on CPU), in training mode; `snapshot` it before training."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(job.model_path)


def snapshot(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {name: param.detach().float().cpu().clone() for name, param in model.named_parameters()}


def param_delta_l2(before: dict[str, torch.Tensor], model: PreTrainedModel) -> float:
    """The L2 norm of the change of all parameters: 0.0 means training did not touch the weights."""
    total = 0.0
    for name, param in model.named_parameters():
        total += float((param.detach().float().cpu() - before[name]).pow(2).sum())
    return math.sqrt(total)


def final_loss(log_history: list[dict[str, Any]], fallback: float) -> float:
    """The last logged training loss (what the model ended at), else the run's mean loss."""
    losses = [float(entry["loss"]) for entry in log_history if "loss" in entry]
    return losses[-1] if losses else fallback


def trainer_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of each of the trainer's own numeric metrics, as `train/<name>`."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(float(value)):
                metrics[TRAINER_PREFIX + key] = float(value)
    return metrics


def finish(job: TrainingJob, trainer: Any, before: dict[str, torch.Tensor], examples: int) -> dict[str, float]:
    """Trains, saves the candidate (merged full model) and, with LoRA, the adapter; returns the metrics.

    Under the launcher every rank trains; global rank 0 saves (with DeepSpeed every rank takes part in the save,
    which gathers ZeRO-3 shards into one 16-bit model) and only its metrics count (the others return none).
    """
    from sil_stages.optimize import checkpoint_selection, trainer_checkpoints
    from sil_stages.optimize.launcher import process_state

    selection = checkpoint_selection.attach(trainer, job.config, job.store, job.model_path, job.seed)
    result, resumed_from = trainer_checkpoints.train(
        trainer,
        every_steps=job.config.checkpoint_every_steps,
        store=job.store,
        output_uri=job.config.output_uri,
        workdir=job.workdir,
    )
    state = process_state()
    chosen = selection.restore_best(trainer.model) if selection is not None else {}
    model: Any = None
    if getattr(trainer, "is_deepspeed_enabled", False):
        model = save_gathered(job, trainer, state.is_main)
    elif state.is_main:
        model = save_candidate(job, trainer.model)
    state.wait_for_everyone()
    if not state.is_main:
        return {}
    history: list[dict[str, Any]] = trainer.state.log_history
    metrics = {
        "train_examples": float(examples),
        "steps": float(trainer.state.global_step),
        "train_loss": final_loss(history, float(result.training_loss)),
        "train_loss_mean": float(result.training_loss),
        "param_delta_l2": param_delta_l2(before, model),
        **trainer_metrics(history),
        **chosen,
    }
    if resumed_from is not None:
        metrics["resumed_from_step"] = float(resumed_from)
    return metrics


def save_candidate(job: TrainingJob, model: Any) -> Any:
    """Saves the trained model (merging a LoRA adapter, saved beside it) and the tokenizer; the saved model."""
    from sil_stages.core.models import load_tokenizer

    if job.config.lora is not None:
        model.save_pretrained(str(job.adapter))
        model = model.merge_and_unload()
    model.save_pretrained(str(job.checkpoint))
    load_tokenizer(job.model_path).save_pretrained(str(job.checkpoint))
    return model


def save_gathered(job: TrainingJob, trainer: Any, is_main: bool) -> Any:
    """DeepSpeed: every rank calls `save_model` (ZeRO-3 gathers the 16-bit weights), rank 0 writes; with LoRA the
    adapter is saved and rank 0 merges it into the init model. Returns the saved model on rank 0, else None."""
    from transformers import AutoModelForCausalLM

    from sil_stages.core.models import load_tokenizer

    trainer.save_model(str(job.adapter if job.config.lora is not None else job.checkpoint))
    if not is_main:
        return None
    if job.config.lora is not None:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(job.model_path)
        PeftModel.from_pretrained(base, str(job.adapter)).merge_and_unload().save_pretrained(str(job.checkpoint))
    load_tokenizer(job.model_path).save_pretrained(str(job.checkpoint))
    return AutoModelForCausalLM.from_pretrained(str(job.checkpoint))


def copy_init(job: TrainingJob) -> dict[str, float]:
    """Saves the init model unchanged as the checkpoint: nothing to train on."""
    from transformers import AutoModelForCausalLM

    from sil_stages.core.models import load_tokenizer

    AutoModelForCausalLM.from_pretrained(job.model_path).save_pretrained(str(job.checkpoint))
    load_tokenizer(job.model_path).save_pretrained(str(job.checkpoint))
    return {"train_examples": 0.0, "steps": 0.0, "param_delta_l2": 0.0}

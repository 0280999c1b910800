"""optimize: supervised fine-tuning of the init model on the kept data (rejection sampling / STaR / ReST-EM).

TRL's `SFTTrainer` on the prompt-completion data select wrote, with the loss on the completion only. Training
happens in a local temporary directory; the checkpoint (safetensors weights, config, tokenizer) is uploaded to
`<output_uri>/checkpoint/` afterwards, so a stage killed mid-training leaves no checkpoint and no manifest.

An empty dataset is not an error: the init model is copied as the checkpoint with `train_examples: 0`, and the
promotion gate, seeing no improvement, rejects it. The metrics say whether training happened (`steps`), how it
went (`train_loss`) and whether the weights moved at all (`param_delta_l2`).
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sil_stages.contract import Hyperparameters, Manifest, OptimizeConfig
from sil_stages.errors import StageInputError
from sil_stages.manifest import StageOutputs
from sil_stages.models import load_tokenizer, resolve_model
from sil_stages.records import Record, read_jsonl, require_field
from sil_stages.seeding import derive_seed, seed_everything
from sil_stages.store import Store

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


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


def sft_config(config: OptimizeConfig, output_dir: Path, examples: int, seed: int) -> Any:
    """The `SFTConfig` of this stage: the config's hyperparameters, completion-only loss, no mid-run saves."""
    import torch
    from trl import SFTConfig  # type: ignore[attr-defined]

    hp = config.hyperparameters
    deepspeed = hp.deepspeed if torch.cuda.is_available() else None
    if hp.deepspeed and deepspeed is None:
        log.warning("hyperparameters.deepspeed is ignored: no CUDA device")
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        warmup_steps=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        lr_scheduler_type=hp.lr_scheduler,
        max_length=hp.max_length,
        seed=seed,
        data_seed=seed,
        bf16=use_bf16(hp),
        deepspeed=deepspeed,
        completion_only_loss=True,
        packing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, total_steps(examples, hp) // 10),
        dataset_num_proc=None,
    )


def _snapshot(model: PreTrainedModel) -> dict[str, torch.Tensor]:
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


def train(config: OptimizeConfig, model_path: str, records: list[Record], workdir: Path) -> dict[str, float]:
    """Runs SFT and saves the checkpoint to `workdir/checkpoint`; returns the metrics."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer  # type: ignore[attr-defined]

    seed = derive_seed(config.seed + config.hyperparameters.seed, config.iteration, "optimize")
    seed_everything(seed)
    tokenizer = load_tokenizer(model_path, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(model_path)
    before = _snapshot(model)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, workdir / "trainer", len(records), seed),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    result = trainer.train()
    checkpoint = workdir / CHECKPOINT_DIR
    trainer.save_model(str(checkpoint))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(checkpoint))
    return {
        "train_examples": float(len(records)),
        "steps": float(trainer.state.global_step),
        "train_loss": final_loss(trainer.state.log_history, float(result.training_loss)),
        "train_loss_mean": float(result.training_loss),
        "param_delta_l2": param_delta_l2(before, model),
    }


def copy_init(model_path: str, workdir: Path) -> dict[str, float]:
    """Saves the init model unchanged as the checkpoint: nothing to train on."""
    from transformers import AutoModelForCausalLM

    checkpoint = workdir / CHECKPOINT_DIR
    AutoModelForCausalLM.from_pretrained(model_path).save_pretrained(str(checkpoint))
    load_tokenizer(model_path).save_pretrained(str(checkpoint))
    return {"train_examples": 0.0, "steps": 0.0, "param_delta_l2": 0.0}


def run(config: OptimizeConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.train_uri, field="train_uri")
    require_field(records, "prompt", uri=config.train_uri, field="train_uri")
    require_field(records, "completion", uri=config.train_uri, field="train_uri")
    model_path = resolve_model(store, config.init_model_uri, field="init_model_uri")
    with tempfile.TemporaryDirectory(prefix="sil-optimize-") as tmp:
        workdir = Path(tmp)
        if records:
            metrics = train(config, model_path, records, workdir)
        else:
            log.warning("train_uri %s is empty: the checkpoint is the init model", config.train_uri)
            metrics = copy_init(model_path, workdir)
        outputs.upload_dir(workdir / CHECKPOINT_DIR, CHECKPOINT_DIR)
    return outputs.seal(stage="optimize", loop=config.loop, iteration=config.iteration, metrics=metrics)

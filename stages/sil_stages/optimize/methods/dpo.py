"""dpo: iterative DPO (and RPO) on preference pairs select built from the scored completions.

Each iteration, select pairs each prompt's best-scored completion (chosen) with its worst (rejected) when their
scores differ by at least `select.pairs.minMargin`; TRL's `DPOTrainer` trains on them. The reference model is the
iteration's init model (`champion`) or the base model (`base`, a fixed π0 across rounds, as RLHFlow's iterative
DPO recipe does). Plain `[sigmoid]` DPO on self-generated pairs mostly lowers the likelihood of the rejected
completion and can hurt accuracy; `[sigmoid, sft]` (RPO) adds the likelihood of the chosen one. In a
conversational loop a pair shares its prompt's messages and chosen and rejected are one assistant message each.
"""

from __future__ import annotations

from typing import Any

from sil_stages.core import methods
from sil_stages.core.settings import Dpo
from sil_stages.optimize.methods.base import Method, TrainingJob
from sil_stages.optimize.methods.training import common_arguments, finish, load_policy, peft_config, snapshot


def reference_model(job: TrainingJob, settings: Dpo) -> Any:
    """None lets TRL copy the init model (or disable the LoRA adapter) as the reference; `base` loads spec.model."""
    if settings.reference == "champion":
        return None
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(job.base_model())


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

    from sil_stages.core.models import load_tokenizer

    settings: Dpo = METHOD.settings_of(job.config)
    tokenizer = load_tokenizer(job.model_path, padding_side="right")
    model = load_policy(job)
    before = snapshot(model)
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in job.records]
    )
    args = DPOConfig(
        **common_arguments(job, len(job.records)),
        beta=settings.beta,
        loss_type=list(settings.loss_type),
        max_length=job.config.hyperparameters.max_length,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=reference_model(job, settings),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(job, model),
    )
    return finish(job, trainer, before, len(job.records))


METHOD = Method(spec=methods.DPO, train=train)

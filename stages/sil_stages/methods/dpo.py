"""dpo: iterative DPO (and RPO) on preference pairs select built from the scored completions.

Each iteration, select pairs each prompt's best-scored completion (chosen) with its worst (rejected) when their
scores differ by at least `select.pairs.minMargin`; TRL's `DPOTrainer` trains on them. The reference model is the
iteration's init model (`champion`) or the base model (`base`, a fixed π0 across rounds, as RLHFlow's iterative
DPO recipe does). Plain `[sigmoid]` DPO on self-generated pairs mostly lowers the likelihood of the rejected
completion and can hurt accuracy; `[sigmoid, sft]` (RPO) adds the likelihood of the chosen one.
"""

from __future__ import annotations

from typing import Any

from sil_stages.methods.base import Method, TrainingJob
from sil_stages.methods.training import common_arguments, finish, load_policy, peft_config, snapshot
from sil_stages.settings import Dpo

NO_PAIRS = (
    "train_uri: select produced no preference pair (all completions of every prompt scored the same, or no "
    "margin reached select.pairs.minMargin); sample more per prompt (acquire.samplesPerPrompt), raise "
    "acquire.sampling.temperature or lower select.pairs.minMargin"
)


def reference_model(job: TrainingJob, settings: Dpo) -> Any:
    """None lets TRL copy the init model (or disable the LoRA adapter) as the reference; `base` loads spec.model."""
    if settings.reference == "champion":
        return None
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(job.base_model())


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

    from sil_stages.models import load_tokenizer

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


METHOD = Method(
    name="dpo",
    summary="iterative DPO with TRL's DPOTrainer on preference pairs (best vs worst scored completion of a "
    "prompt, see select.pairs); lossType [sigmoid, sft] is RPO",
    trainer="trl.DPOTrainer",
    data="preference",
    settings=Dpo,
    train=train,
    empty_data=NO_PAIRS,
)

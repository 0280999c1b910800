"""sft: supervised fine-tuning on the kept completions (rejection sampling / STaR / ReST-EM).

TRL's `SFTTrainer` on the prompt-completion data select wrote, with the loss on the completion only.
"""

from __future__ import annotations

from sil_stages.methods.base import Method, TrainingJob
from sil_stages.methods.training import common_arguments, finish, load_policy, peft_config, snapshot


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from sil_stages.models import load_tokenizer

    tokenizer = load_tokenizer(job.model_path, padding_side="right")
    model = load_policy(job)
    before = snapshot(model)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in job.records])
    args = SFTConfig(
        **common_arguments(job, len(job.records)),
        max_length=job.config.hyperparameters.max_length,
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(job, model),
    )
    return finish(job, trainer, before, len(job.records))


METHOD = Method(
    name="sft",
    summary="supervised fine-tuning on the selected completions with TRL's SFTTrainer (rejection sampling / "
    "STaR / ReST-EM)",
    trainer="trl.SFTTrainer",
    data="prompt-completion",
    settings=None,
    train=train,
)

"""sft: supervised fine-tuning on the kept completions (rejection sampling / STaR / ReST-EM).

TRL's `SFTTrainer` on the prompt-completion data select wrote, with the loss on the completion only. In a
conversational loop the rows are TRL's conversational format (the prompt's messages, the completion one assistant
message): TRL renders them with the model's chat template, and the loss covers the assistant turn only (its content
and the template's end of turn), as tests/unit/stages/test_chat.py checks on the collator's labels.
"""

from __future__ import annotations

from sil_stages.core import methods
from sil_stages.optimize.methods.base import Method, TrainingJob
from sil_stages.optimize.methods.training import common_arguments, finish, load_policy, peft_config, snapshot


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from sil_stages.core.models import load_tokenizer

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


METHOD = Method(spec=methods.SFT, train=train)

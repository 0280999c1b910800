"""grpo: reinforcement learning with verifiable rewards (GRPO / DAPO, as in DeepSeek-R1; TTRL when label-free).

TRL's `GRPOTrainer` on the prompts select wrote: it samples `numGenerations` rollouts per prompt from the policy
(transformers on CPU; vLLM colocated on the GPU when `acquire.engine` is vllm), scores them with the loop's own
scorer (`rewards`), and pushes the policy towards the completions that beat their group's mean. The effective batch
(completions per optimizer step) must hold whole groups, which the CEL check below enforces at admission.
"""

from __future__ import annotations

import json
from typing import Any

from sil_stages.methods.base import CelCheck, Method, TrainingJob
from sil_stages.methods.rewards import reward_function
from sil_stages.methods.training import common_arguments, finish, load_policy, peft_config, snapshot
from sil_stages.scorers import ScorerContext
from sil_stages.settings import Grpo

DEFAULT_GENERATIONS = Grpo.model_fields["num_generations"].default


def rollout_engine(job: TrainingJob) -> dict[str, Any]:
    """vLLM colocated with training when the loop generates with vLLM and a GPU is there; else transformers."""
    import torch

    if job.config.engine == "vllm" and torch.cuda.is_available():
        return {"use_vllm": True, "vllm_mode": "colocate"}
    return {"use_vllm": False}


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    from sil_stages.models import load_tokenizer

    settings: Grpo = METHOD.settings_of(job.config)
    tokenizer = load_tokenizer(job.model_path, padding_side="left")
    model = load_policy(job)
    before = snapshot(model)
    rows = [
        {"prompt": str(r["prompt"]), "record": r.get("record") or json.dumps({"prompt": r["prompt"]})}
        for r in job.records
    ]
    arguments = common_arguments(job, len(rows) * settings.num_generations)
    args = GRPOConfig(
        **arguments,
        num_generations=settings.num_generations,
        beta=settings.beta,
        loss_type=settings.loss_type,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        scale_rewards=settings.scale_rewards,
        **rollout_engine(job),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_function(
            job.config.scorer,
            ScorerContext(
                settings=job.config.scorer,
                field="select.scorer",
                store=job.store,
                champion_uri=job.config.init_model_uri,
                seed=job.seed,
                engine=job.config.engine,
            ),
        ),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(job, model),
    )
    return finish(job, trainer, before, len(rows))


_GROUPS = f"(has(self.grpo) ? self.grpo.numGenerations : {DEFAULT_GENERATIONS})"

METHOD = Method(
    name="grpo",
    summary="reinforcement learning with verifiable rewards with TRL's GRPOTrainer: rollouts scored by "
    "select.scorer (a verifier, or majority-vote for label-free TTRL)",
    trainer="trl.GRPOTrainer",
    data="prompt-only",
    settings=Grpo,
    train=train,
    checks=(
        CelCheck(
            # has(): the API server also checks the rule against the CRD's `default: {}` of spec.optimize.
            rule="!has(self.method) || self.method != 'grpo' || "
            f"(self.hyperparameters.batchSize * self.hyperparameters.gradientAccumulationSteps) % {_GROUPS} == 0",
            message="method grpo: hyperparameters.batchSize x gradientAccumulationSteps (completions per optimizer "
            "step) must be divisible by grpo.numGenerations (default "
            f"{DEFAULT_GENERATIONS}), so that every step holds whole groups",
            field_path=".hyperparameters.batchSize",
        ),
    ),
)

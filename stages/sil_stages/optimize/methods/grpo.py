"""grpo: reinforcement learning with verifiable rewards (GRPO / DAPO, as in DeepSeek-R1; TTRL when label-free).

TRL's `GRPOTrainer` on the prompts select wrote: it samples `numGenerations` rollouts per prompt from the policy
(transformers on CPU; vLLM colocated on the GPU when `acquire.engine` is vllm), scores them with the loop's own
scorer (`rewards`), and pushes the policy towards the completions that beat their group's mean. The effective batch
(completions per optimizer step) must hold whole groups, which the CEL check below enforces at admission.
"""

from __future__ import annotations

import json
from typing import Any

from sil_stages.core import methods
from sil_stages.core.chat import end_of_turn_ids
from sil_stages.core.contract import Manifest, manifest_uri
from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import AUTO, Grpo
from sil_stages.core.store import StoreError
from sil_stages.optimize.methods.base import Method, TrainingJob
from sil_stages.optimize.methods.rewards import reward_function
from sil_stages.optimize.methods.training import common_arguments, finish, load_policy, peft_config, snapshot
from sil_stages.select.scorers import ScorerContext


def rollout_engine(job: TrainingJob) -> dict[str, Any]:
    """vLLM colocated with training when the loop generates with vLLM and a GPU is there; else transformers."""
    import torch

    if job.config.engine == "vllm" and torch.cuda.is_available():
        return {"use_vllm": True, "vllm_mode": "colocate"}
    return {"use_vllm": False}


def rollout_temperature(job: TrainingJob, settings: Grpo) -> float:
    """grpo.temperature, or for `auto` the temperature acquire sampled with this iteration (its manifest's metric
    `temperature`: the probe's choice under acquire's own `auto`, else acquire's fixed temperature), so that the
    rollouts are drawn as hot as the data select kept."""
    if settings.temperature != AUTO:
        return float(settings.temperature)
    acquire = job.config.acquire_uri
    if acquire is None or job.store is None:
        raise StageInputError("optimize.grpo.temperature: auto needs acquire_uri (this iteration's acquire directory)")
    uri = manifest_uri(acquire)
    try:
        chosen = Manifest.model_validate_json(job.store.read_text(uri)).metrics.get("temperature")
    except StoreError as error:
        raise StageInputError(f"optimize.grpo.temperature: auto: cannot read the acquire manifest: {error}") from error
    if chosen is None or chosen <= 0.0:
        raise StageInputError(
            f"optimize.grpo.temperature: auto: the acquire manifest {uri} records no temperature above 0 "
            f"({chosen}); set a number"
        )
    return float(chosen)


def rollout_prompt(prompt: Any) -> Any:
    """A text prompt as a string; a conversational one (messages, the system prompt included, as select wrote them)
    as is: TRL renders it with the chat template and generation prompt, as `sil_stages.core.chat` does for acquire."""
    return prompt if isinstance(prompt, list) else str(prompt)


def stop_at_end_of_turn(model: Any, tokenizer: Any, job: TrainingJob) -> None:
    """Rollouts of a conversational loop stop where acquire's do, at the template's end-of-turn tokens: TRL stops
    at the model's generation_config EOS ids (and the tokenizer's EOS)."""
    if not any(isinstance(record["prompt"], list) for record in job.records):
        return
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)


def train(job: TrainingJob) -> dict[str, float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    from sil_stages.core.models import load_tokenizer

    settings: Grpo = METHOD.settings_of(job.config)
    tokenizer = load_tokenizer(job.model_path, padding_side="left")
    model = load_policy(job)
    before = snapshot(model)
    rows = [
        {"prompt": rollout_prompt(r["prompt"]), "record": r.get("record") or json.dumps({"prompt": r["prompt"]})}
        for r in job.records
    ]
    stop_at_end_of_turn(model, tokenizer, job)
    arguments = common_arguments(job, len(rows) * settings.num_generations)
    args = GRPOConfig(
        **arguments,
        num_generations=settings.num_generations,
        beta=settings.beta,
        loss_type=settings.loss_type,
        max_completion_length=settings.max_completion_length,
        temperature=rollout_temperature(job, settings),
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
                chat=job.config.chat,
            ),
        ),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(job, model),
    )
    return finish(job, trainer, before, len(rows))


METHOD = Method(spec=methods.GRPO, train=train)

"""From the user's spec to one stage's config (the stage contract). Pure: no I/O.

The settings a stage shares with the spec (sampling, scorer, keep, hyperparameters, refinement, datasets) are the
same models on both sides (sil_stages.core.settings), so they are handed over as they are.

This is the only place that knows which spec field feeds which stage input, and the only place that wires one
stage's outputs to the next stage's inputs through the store layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from sil_operator.api.spec import LoopSpec
from sil_stages.core.contract import (
    CHECKPOINT_DIR,
    SAMPLES_FILE,
    TRAIN_FILE,
    AcquireConfig,
    EvaluateConfig,
    OptimizeConfig,
    ScorerConfig,
    SelectConfig,
    StorageOptions,
    stage_uri,
)
from sil_stages.core.methods import method_spec
from sil_stages.core.optimization import Optimization
from sil_stages.core.settings import ChatFormat
from sil_stages.core.store import join

AnyStageConfig = AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig


@dataclass(frozen=True)
class LoopRef:
    """Which loop: its name, namespace and the spec generation being acted on."""

    name: str
    namespace: str = "default"
    generation: int = 1


def samples_uri(storage: str, iteration: int) -> str:
    return join(stage_uri(storage, iteration, "acquire"), SAMPLES_FILE)


def train_uri(storage: str, iteration: int) -> str:
    return join(stage_uri(storage, iteration, "select"), TRAIN_FILE)


def checkpoint_uri(storage: str, iteration: int) -> str:
    return join(stage_uri(storage, iteration, "optimize"), CHECKPOINT_DIR)


def training_scorer(spec: LoopSpec) -> ScorerConfig | None:
    """The select scorer when it is not the held-out verifier (a vote, another verifier): the reward-hacking guard
    scores held-out answers with it too, to see whether the training signal still agrees with the truth."""
    scorer = spec.select.scorer
    if scorer.type == "verifier" and scorer.verifier == spec.evaluate.verifier:
        return None
    return scorer


def build_stage_config(spec: LoopSpec, loop: LoopRef, iteration: int, stage: str, champion_uri: str) -> AnyStageConfig:
    """The config of `stage` in `iteration`, when the champion at the start of the iteration is `champion_uri`."""
    storage = spec.storage.uri
    common = {
        "loop": loop.name,
        "namespace": loop.namespace,
        "iteration": iteration,
        "storage": StorageOptions(uri=storage, endpoint=spec.storage.endpoint, region=spec.storage.region),
        "output_uri": stage_uri(storage, iteration, stage),
        "seed": spec.loop_seed,
        "chat": ChatFormat(chat_template=spec.model.chat_template, system_prompt=spec.model.system_prompt),
    }
    if stage == "acquire":
        acquire = spec.acquire
        return AcquireConfig(
            **common,
            model_uri=champion_uri,
            prompts_uri=acquire.prompts.uri,
            prompts_generator=acquire.prompts.generator,
            per_iteration=acquire.prompts.per_iteration,
            self_instruct=acquire.prompts.self_instruct,
            earlier_acquire_uris=tuple(stage_uri(storage, k, "acquire") for k in range(1, iteration)),
            pushgateway=spec.pushgateway_address,
            samples_per_prompt=acquire.samples_per_prompt,
            sampling=acquire.sampling,
            engine=acquire.engine,
            batch_size=acquire.batch_size,
            scorer=spec.select.scorer,
            keep=spec.select.keep,
        )
    if stage == "select":
        select = spec.select
        return SelectConfig(
            **common,
            samples_uri=samples_uri(storage, iteration),
            scorer=select.scorer,
            keep=select.keep,
            data=method_spec(spec.optimize.method).data,
            pairs=select.pairs,
            accumulate=select.accumulate,
            earlier_select_uris=tuple(stage_uri(storage, k, "select") for k in range(1, iteration)),
            champion_uri=champion_uri,
            engine=spec.acquire.engine,
            pushgateway=spec.pushgateway_address,
        )
    if stage == "optimize":
        optimize = spec.optimize
        return OptimizeConfig(
            **common,
            train_uri=train_uri(storage, iteration),
            init_model_uri=champion_uri if optimize.init_from == "champion" else spec.model.uri,
            base_model_uri=spec.model.uri,
            # The training settings as they are: method, its block, lora, hyperparameters (one model, both sides).
            **{name: getattr(optimize, name) for name in Optimization.model_fields},
            scorer=spec.select.scorer,
            engine=spec.acquire.engine,
            acquire_uri=stage_uri(storage, iteration, "acquire"),
            pushgateway=spec.pushgateway_address,
        )
    if stage == "evaluate":
        evaluate = spec.evaluate
        return EvaluateConfig(
            **common,
            candidate_uri=checkpoint_uri(storage, iteration),
            champion_uri=champion_uri,
            datasets=tuple(evaluate.datasets),
            refinement=evaluate.refinement,
            verifier=evaluate.verifier,
            answer_pattern=evaluate.answer_pattern or spec.select.scorer.answer_pattern,
            max_new_tokens=evaluate.max_new_tokens or spec.acquire.sampling.max_new_tokens,
            batch_size=evaluate.batch_size,
            engine=spec.acquire.engine,
            pushgateway=spec.pushgateway_address,
            significance=evaluate.significance,
            contamination=evaluate.contamination,
            base_uri=spec.model.uri,
            samples_uri=samples_uri(storage, iteration),
            train_uri=train_uri(storage, iteration),
            training_scorer=training_scorer(spec),
            training_min_score=spec.select.keep.min_score,
        )
    raise ValueError(f"unknown stage {stage!r}")

"""The stage contract: what a stage program is given, and what it must leave behind.

A stage is `python -m sil_stages <stage> --config <json or @file>`; the same command runs in a Job's container
and as a local subprocess. The config names the loop, the iteration and every input and output as store URIs,
so a stage needs nothing else (no Kubernetes API, no operator import).

A stage writes its outputs first and its manifest (`_manifest.json`: files with sizes and sha256, metrics) as
its *last* write. No manifest means the stage did not finish; a manifest means it did, and running the stage
again is a no-op. Both runners (the operator and `sil run`) rely on this and on nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sil_stages.core import settings
from sil_stages.core.methods import DataShape
from sil_stages.core.optimization import Optimization

STAGES: tuple[str, ...] = ("acquire", "select", "optimize", "evaluate")
"""The stage order of one iteration."""

MANIFEST_NAME = "_manifest.json"
CHAMPION_NAME = "champion.json"

# What one stage writes for another (or for a later iteration) to read, under its stage directory: the runners
# wire these URIs into the next stage's config (sil_operator.stageconfig), the stages write them.
SAMPLES_FILE = "samples.jsonl"
"""acquire: one row per prompt with its sampled completions; select reads it."""
GENERATED_FILE = "generated.jsonl"
"""acquire: Self-Instruct's generated prompts with their status; later iterations' Self-Instruct reads it."""
TRAIN_FILE = "train.jsonl"
"""select: the training data in the method's shape; optimize reads it."""
KEPT_FILE = "kept.jsonl"
"""select: the kept records; a later iteration's select reads it when it accumulates."""
SCORED_FILE = "scored.jsonl"
"""select: every scored record (for people and reports)."""
CHECKPOINT_DIR = "checkpoint"
"""optimize: the candidate model; evaluate and the next iteration read it."""

StageName = Literal["acquire", "select", "optimize", "evaluate"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def iteration_uri(storage_uri: str, iteration: int) -> str:
    return f"{storage_uri.rstrip('/')}/iterations/{iteration}"


def stage_uri(storage_uri: str, iteration: int, stage: str) -> str:
    """`<storage>/iterations/<k>/<stage>`: everything a stage writes lives under here."""
    return f"{iteration_uri(storage_uri, iteration)}/{stage}"


def manifest_uri(stage_dir_uri: str) -> str:
    return f"{stage_dir_uri.rstrip('/')}/{MANIFEST_NAME}"


def champion_uri(storage_uri: str) -> str:
    return f"{storage_uri.rstrip('/')}/{CHAMPION_NAME}"


# The settings a user writes in the spec and a stage is given are one set of models (sil_stages.core.settings): the same
# defaults, bounds and rules on both sides. The names below are the contract's.
StorageOptions = settings.StorageOptions
SamplingConfig = settings.Sampling
ScorerConfig = settings.Scorer
KeepConfig = settings.Keep
Hyperparameters = settings.Hyperparameters
EvalDatasetConfig = settings.EvalDataset
RefinementConfig = settings.Refinement
PairsConfig = settings.Pairs
AccumulateConfig = settings.Accumulate
SelfInstructConfig = settings.SelfInstruct


class MetricLabels(_Frozen):
    """The labels every metric of this loop carries (Prometheus conventions: snake_case keys)."""

    namespace: str
    loop: str
    iteration: int


class _StageConfigBase(_Frozen):
    loop: str
    namespace: str = "default"
    iteration: int = Field(ge=1)
    storage: StorageOptions
    output_uri: str
    """The stage directory; outputs and the manifest go here."""
    seed: int = 0
    chat: settings.ChatFormat = settings.ChatFormat()
    """spec.model's chat settings: how every model of the stage reads a prompt (sil_stages.core.chat)."""


_OWN_NAMES = ConfigDict(alias_generator=None)
"""A config's own fields are snake_case only (errors name them as written); the shared settings keep their aliases."""


class AcquireConfig(_StageConfigBase, settings.Generation):
    model_config = _OWN_NAMES
    stage: Literal["acquire"] = "acquire"
    model_uri: str
    prompts_uri: str | None = None
    """The JSONL file of prompts (spec.acquire.prompts.uri); exactly one of it and `prompts_generator`."""
    prompts_generator: str | None = None
    """spec.acquire.prompts.generator: `module:function(iteration, seed, count)` giving prompt records."""
    per_iteration: int | None = None
    """How many prompts to draw this iteration (a deterministic draw seeded by the iteration); None: all."""
    self_instruct: SelfInstructConfig | None = None
    """spec.acquire.prompts.selfInstruct: the champion writes new prompts from examples of `prompts_uri`."""
    earlier_acquire_uris: tuple[str, ...] = ()
    """The acquire directories of this loop's earlier iterations, oldest first: their generated prompts are not new
    (an iteration without an acquire manifest is skipped)."""
    pushgateway: str | None = None
    """Pushgateway URL to push the acquire counts to (grouped by namespace, loop, iteration); None: don't."""
    scorer: ScorerConfig = ScorerConfig()
    """select's scorer: `sampling.temperature: auto` scores its probe samples with it."""
    keep: KeepConfig = KeepConfig()
    """select's keep rules: `sampling.temperature: auto` picks the temperature whose probe select would keep most of."""


class SelectConfig(_StageConfigBase):
    stage: Literal["select"] = "select"
    samples_uri: str
    scorer: ScorerConfig = ScorerConfig()
    keep: KeepConfig = KeepConfig()
    data: DataShape = "prompt-completion"
    """The shape of `train.jsonl`: the one the optimize method consumes (`sil_stages.optimize.methods`)."""
    pairs: PairsConfig = PairsConfig()
    accumulate: AccumulateConfig = AccumulateConfig()
    earlier_select_uris: tuple[str, ...] = ()
    """The select directories of this loop's earlier iterations, oldest first: the data they kept feeds
    `accumulate` and `keep.dedupe.across_iterations` (an iteration without a select manifest is skipped)."""
    champion_uri: str | None = None
    """The iteration's champion: the default judge model of `llm-judge` (self-rewarding)."""
    engine: settings.EngineName = "transformers"
    """acquire's engine: the judge of `llm-judge` generates with it."""
    pushgateway: str | None = None
    """Pushgateway URL to push the selection report to (grouped by namespace, loop, iteration); None: don't."""


class OptimizeConfig(_StageConfigBase, Optimization):
    """spec.optimize's settings as they are (`Optimization`), plus where to read and what the methods need."""

    model_config = _OWN_NAMES
    stage: Literal["optimize"] = "optimize"
    train_uri: str
    init_model_uri: str
    base_model_uri: str | None = None
    """spec.model: the reference of `dpo.reference: base`."""
    scorer: ScorerConfig = ScorerConfig()
    """select's scorer: the reward of methods that generate their own rollouts (grpo)."""
    engine: settings.EngineName = "transformers"
    """acquire's engine: grpo rolls out with vLLM (colocated) when it is vllm and a GPU is there."""
    acquire_uri: str | None = None
    """This iteration's acquire directory: `grpo.temperature: auto` reads the temperature acquire sampled with from
    its manifest (metric `temperature`)."""
    pushgateway: str | None = None
    """Pushgateway URL to push the trainer's metrics to (grouped by namespace, loop, iteration); None: don't."""


class EvaluateConfig(_StageConfigBase, settings.Judging):
    model_config = _OWN_NAMES
    stage: Literal["evaluate"] = "evaluate"
    candidate_uri: str
    champion_uri: str
    datasets: tuple[EvalDatasetConfig, ...]
    max_new_tokens: settings.MaxNewTokens = settings.DEFAULT_MAX_NEW_TOKENS
    engine: settings.EngineName = "transformers"
    pushgateway: str | None = None
    """Pushgateway URL to push the evaluation series to (grouped by namespace, loop, iteration); None: don't."""
    base_uri: str | None = None
    """The loop's base model: output-length drift is measured against it. None: not measured."""
    samples_uri: str | None = None
    """This iteration's acquire samples: their diversity is reported (selfimprove_acquire_*). None: not measured."""
    train_uri: str | None = None
    """This iteration's selected training data: its overlap with the datasets is reported. None: not measured."""
    training_scorer: ScorerConfig | None = None
    """The select stage's scorer when it is not the held-out verifier: it also scores the held-out answers
    (reward-hacking guard). None: the training scorer is the held-out verifier."""
    training_min_score: float = settings.DEFAULT_MIN_SCORE
    """select.keep.minScore: a held-out answer passes the training scorer when it scores at least this."""


StageConfig = Annotated[AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig, Field(discriminator="stage")]


class StageConfigEnvelope(BaseModel):
    """Parses any stage config by its `stage` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: StageConfig


def parse_stage_config(raw: str | dict[str, Any]) -> AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig:
    data = json.loads(raw) if isinstance(raw, str) else raw
    return StageConfigEnvelope.model_validate({"config": data}).config


class FileEntry(_Frozen):
    path: str
    """Relative to the stage directory."""
    size: int
    sha256: str


class MetricSample(_Frozen):
    """One metric series value: what the evaluate stage pushes to Prometheus, and what local gates read."""

    name: str
    labels: dict[str, str]
    value: float


class Manifest(_Frozen):
    """The last thing a stage writes. Its presence is the stage's completion."""

    stage: StageName
    iteration: int
    loop: str
    files: tuple[FileEntry, ...] = ()
    metrics: dict[str, float] = {}
    """Scalar results for tables and reports (e.g. samples, kept, train_loss, heldout accuracy)."""
    series: tuple[MetricSample, ...] = ()
    """Labelled metric samples (evaluate only): the data gates read."""
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    verified_manifest_sha256: str | None = None
    """Evaluate only: the sha256 of the optimize manifest (its bytes as stored) that the candidate checkpoint was
    checked against, file by file, before it was measured. A promotion promotes only that checkpoint."""
    findings: dict[str, list[str]] = {}
    """Named items behind a metric, by `<dataset>/<guard>` (evaluate: `<dataset>/contaminated` -> `<item number>:
    <prompt>` for the evaluation items found in the training data). Empty in manifests written before it existed."""


class ChampionPointer(_Frozen):
    """`champion.json`: which checkpoint is the champion. Written only by a promotion."""

    iteration: int
    """0 is the base model."""
    uri: str
    score: float | None = None
    promoted_at: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)

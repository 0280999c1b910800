"""Settings shared by the loop spec (what a user writes) and the stage contract (what a stage is given).

Each setting is defined once, here, with its default, its bounds, its field-level rules and its description:
- the operator's spec models use these classes as they are, so the CRD's schema (bounds, patterns, enums,
  defaults, the `kubectl explain` text), `sil validate` and `sil explain` all come from this one definition;
- the stages parse their config JSON with the same classes, so a stage applies the defaults the user was shown.

Field-level rules are pydantic constraints or `Matching` patterns, which pydantic both enforces and writes into the
JSON schema (from which `sil crd` builds the CRD). A pattern therefore has to mean the same in Python's `re` and in
the API server's RE2: plain classes, groups, alternation and anchors only (no lookarounds, no backreferences).

camelCase on the wire (the spec's YAML), snake_case in Python; `populate_by_name` keeps the stage config JSON,
which the runners write with snake_case names, parsing. This module imports nothing from the operator: stage images
carry no kopf.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


class Settings(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (a typo must not become a default)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


@dataclass(frozen=True)
class Matching:
    """A string rule as a regular expression: checked by pydantic, and written as `pattern` into the JSON schema.

    `expected` says in words what a valid value looks like; it is the error message of `sil validate`.
    """

    pattern: str
    expected: str

    def __post_init__(self) -> None:
        # Anchored, and matched whole in Python: Python's `$` also matches before a final newline, RE2's does not.
        if not (self.pattern.startswith("^") and self.pattern.endswith("$")):
            raise ValueError(f"{self.pattern!r}: a Matching pattern must be anchored with ^ and $")

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        compiled = re.compile(self.pattern)
        expected = self.expected

        def check(value: str) -> str:
            if compiled.fullmatch(value) is None:
                raise PydanticCustomError("pattern_mismatch", "expected {expected}", {"expected": expected})
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[
    str,
    Field(max_length=63),
    Matching(
        DNS_LABEL_PATTERN,
        "a DNS label: lowercase letters, digits and '-', starting and ending with a letter "
        "or digit, at most 63 characters",
    ),
]
"""A name that becomes a Kubernetes name or label value."""

BUILTIN_VERIFIERS = ("exact-match",)
VERIFIER_PATTERN = "^(" + "|".join(BUILTIN_VERIFIERS) + r"|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"
Verifier = Annotated[
    str, Matching(VERIFIER_PATTERN, "exact-match, or a Python function as module:function (e.g. arithmetic:verify)")
]

# A value with a scheme (`letters:`) must use one of the listed ones; anything else is a path. Python's urlparse
# reads a scheme the same way: a letter, then letters, digits, '+', '-' or '.', then ':'.
_PATH = r"[^A-Za-z].*|[A-Za-z][A-Za-z0-9+.-]*([^A-Za-z0-9+.:-].*)?"
MODEL_URI_PATTERN = rf"^((s3|file|hf)://.+|{_PATH})$"
DATA_URI_PATTERN = rf"^((s3|file)://.+|{_PATH})$"
ModelUri = Annotated[
    str,
    Field(min_length=1),
    Matching(MODEL_URI_PATTERN, "s3://bucket/prefix, file:///path, hf://org/name or a path (no other scheme)"),
]
DataUri = Annotated[
    str, Field(min_length=1), Matching(DATA_URI_PATTERN, "s3://bucket/key, file:///path or a path (no other scheme)")
]
"""Where the store reads or writes: `store.Store` serves s3:// and file:// (a path becomes file://)."""


def _compiles(value: str | None) -> str | None:
    # Python only: the API server cannot compile a regex given as a value. parse_loop (and so the operator, which
    # marks such a loop Failed with reason InvalidSpec) still rejects it.
    if value is not None:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from error
    return value


AnswerPattern = Annotated[str | None, AfterValidator(_compiles)]


class Sampling(Settings):
    temperature: float = Field(default=1.0, ge=0.0, le=5.0, description="Sampling temperature. Default: 1.0.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass. Default: 1.0.")
    max_new_tokens: int = Field(default=32, ge=1, le=32768, description="Tokens generated per sample. Default: 32.")


class Scorer(Settings):
    type: Literal["verifier", "majority-vote"] = Field(
        default="verifier",
        description="verifier: a program checks each completion. majority-vote: label-free, the most common "
        "answer among a prompt's samples is taken as correct (self-consistency); needs samplesPerPrompt >= 2. "
        "Default: verifier.",
    )
    verifier: Verifier = Field(
        default="exact-match",
        description="For type verifier: exact-match (the extracted answer equals the prompt record's `answer` "
        "after normalization) or a Python function `module:function(prompt, completion, record) -> float` "
        "importable by the stage. Default: exact-match.",
    )
    answer_pattern: AnswerPattern = Field(
        default=None,
        description="Regular expression extracting the answer from a completion (first group, else the whole "
        "match). Default: the first line of the completion.",
    )
    min_vote_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="For type majority-vote: a prompt whose majority answer has a smaller share of its samples "
        "gets no pseudo-label (every completion scores 0; weak majorities are often wrong). Default: 0 (always "
        "vote).",
    )


class Keep(Settings):
    min_score: float = Field(default=1.0, description="Keep completions scoring at least this. Default: 1.0.")
    max_per_prompt: int | None = Field(
        default=None, ge=1, description="Keep at most this many completions per prompt. Default: no limit."
    )
    dedupe: bool = Field(default=True, description="Drop identical completions of the same prompt. Default: true.")


class Hyperparameters(Settings):
    learning_rate: float = Field(default=1e-4, ge=0.0, le=1.0, description="Peak learning rate. Default: 1e-4.")
    epochs: float = Field(default=1.0, gt=0.0, le=100.0, description="Passes over the selected data. Default: 1.")
    batch_size: int = Field(default=16, ge=1, description="Per-device batch size. Default: 16.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Default: 1.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps. Default: no limit.")
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Default: 0.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="Default: 0.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule. Default: linear."
    )
    max_length: int = Field(default=256, ge=8, description="Truncate examples to this many tokens. Default: 256.")
    seed: int = Field(default=0, ge=0, description="Training seed. Default: 0.")
    bf16: bool | None = Field(
        default=None, description="bf16 training. Default: on when the GPU supports it, off on CPU."
    )
    deepspeed: str | None = Field(
        default=None, description="DeepSpeed config (path in the image, or JSON); GPU only. Default: none."
    )


class EvalDataset(Settings):
    name: DnsLabel = Field(description="Dataset name, a DNS label; it becomes the `dataset` metric label.")
    uri: DataUri = Field(
        description="JSONL with `prompt` and `answer` fields: s3://bucket/key, file:///path, or a path relative to "
        "the loop file for `sil run`."
    )


class Refinement(Settings):
    method: Literal["none", "self-consistency"] = Field(
        default="self-consistency",
        description="Inference refinement measured at evaluation: self-consistency@k (majority answer of "
        "`samples` samples). Default: self-consistency.",
    )
    samples: int = Field(default=8, ge=1, le=256, description="k for self-consistency@k. Default: 8.")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="Sampling temperature. Default: 0.7.")


class Generation(Settings):
    """How the champion samples completions: spec.acquire's settings, given to the acquire stage as they are."""

    samples_per_prompt: int = Field(default=4, ge=1, le=256, description="Completions per prompt. Default: 4.")
    sampling: Sampling = Field(default_factory=Sampling, description="Sampling parameters.")
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="Generation engine: transformers (CPU or GPU) or vllm (GPU, needs the [gpu] extra). "
        "Default: transformers.",
    )
    batch_size: int = Field(default=64, ge=1, description="Prompts per generation batch. Default: 64.")


class Significance(Settings):
    """How candidate and champion are compared on the same prompts (sil_stages.significance)."""

    resamples: int = Field(
        default=2000,
        ge=100,
        le=100000,
        description="Paired bootstrap resamples of the prompts (seeded: the same evaluation gives the same "
        "interval). Default: 2000.",
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        le=0.999,
        description="Confidence of the interval of the candidate-champion difference, the series "
        "selfimprove_eval_delta_ci_low and selfimprove_eval_delta_ci_high. Default: 0.95.",
    )


class Contamination(Settings):
    """Overlap between this iteration's selected training data and the evaluation datasets (sil_stages.guards)."""

    ngram: int = Field(
        default=8,
        ge=1,
        le=50,
        description="An evaluation item is contaminated when one of its prompt's word n-grams appears in a "
        "selected training prompt or completion; an item shorter than ngram words must appear whole. Default: 8.",
    )
    max_overlap: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest share of contaminated items tolerated in any evaluation dataset. When set, a gate "
        "named evaluate-contamination is added to promotion.gates and fails the iteration above it (the "
        "offending items are in the evaluate manifest and results.json); 0 tolerates none. Default: unset "
        "(measured and reported as selfimprove_eval_contamination, never gating).",
    )


class Judging(Settings):
    """How answers are judged at evaluation: spec.evaluate's settings, given to the evaluate stage as they are."""

    refinement: Refinement = Field(default_factory=Refinement, description="Inference refinement.")
    verifier: Verifier = Field(
        default="exact-match",
        description="How an answer is judged correct: exact-match against the dataset's `answer`, or a "
        "function module:function. Default: exact-match.",
    )
    answer_pattern: AnswerPattern = Field(
        default=None, description="Regex extracting the answer; default: select.scorer.answerPattern."
    )
    batch_size: int = Field(default=64, ge=1, description="Prompts per generation batch. Default: 64.")
    significance: Significance = Field(
        default_factory=Significance, description="Paired interval and p-value of candidate minus champion."
    )
    contamination: Contamination = Field(
        default_factory=Contamination, description="Training-data overlap with the evaluation datasets."
    )


class StorageOptions(Settings):
    """How to reach the store. Credentials never appear here: they come from the environment."""

    uri: DataUri = Field(
        description="Where the loop keeps its data and checkpoints: s3://bucket/prefix, or file:///path (or a "
        "relative path for `sil run`). Layout: iterations/<k>/<stage>/ and champion.json. Deleting the loop "
        "keeps these artifacts.",
    )
    endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL for S3-compatible stores (SeaweedFS, MinIO). Default: AWS, or the "
        "AWS_ENDPOINT_URL environment variable.",
    )
    region: str | None = Field(default=None, description="S3 region. Default: us-east-1 or AWS_DEFAULT_REGION.")


class Pairs(Settings):
    """How select builds preference pairs (for methods that train on pairs, e.g. dpo)."""

    min_margin: float = Field(
        default=0.5,
        ge=0.0,
        description="A prompt gives one pair (chosen = its best-scored completion, rejected = its worst) only when "
        "their score difference is at least this; prompts whose completions all score the same give none. "
        "Default: 0.5.",
    )


class Lora(Settings):
    """Parameter-efficient training with peft LoRA, for any method. The candidate is the merged full model."""

    r: int = Field(default=16, ge=1, le=1024, description="Rank of the LoRA update matrices. Default: 16.")
    alpha: int = Field(
        default=32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha/r). Default: 32."
    )
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input. Default: 0.05.")
    target_modules: list[str] = Field(
        default=["all-linear"],
        min_length=1,
        description="Module names (or name suffixes) to adapt, e.g. [q_proj, v_proj]; all-linear adapts every "
        "linear layer but the output head. A list matching no module of the model fails the optimize stage "
        "with the candidate names. Default: [all-linear].",
    )


DpoLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
"""TRL 1.x `DPOConfig.loss_type` values."""


class Dpo(Settings):
    """Iterative DPO on the pairs select built (TRL DPOTrainer)."""

    beta: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Strength of the pull towards the reference model. Default: 0.1."
    )
    loss_type: list[DpoLoss] = Field(
        default=["sigmoid", "sft"],
        min_length=1,
        max_length=4,
        description="TRL DPO loss types, summed: [sigmoid] is plain DPO, [sigmoid, sft] is RPO (DPO plus the "
        "likelihood of the chosen completion; plain DPO on self-generated pairs mostly pushes the rejected "
        "likelihood down and can lower accuracy). Others: hinge, ipo, robust, apo_zero, ... "
        "Default: [sigmoid, sft].",
    )
    reference: Literal["champion", "base"] = Field(
        default="champion",
        description="The reference model of the DPO loss. champion: the model this iteration starts from. base: "
        "spec.model, fixed across iterations (more stable over many rounds). Default: champion.",
    )


class Grpo(Settings):
    """GRPO (RL with verifiable rewards, TRL GRPOTrainer); the reward is select.scorer."""

    num_generations: int = Field(
        default=8,
        ge=2,
        le=256,
        description="Completions sampled per prompt (one group). hyperparameters.batchSize x "
        "gradientAccumulationSteps (completions per optimizer step) must be divisible by it. Default: 8.",
    )
    beta: float = Field(
        default=0.0,
        ge=0.0,
        description="KL coefficient towards the reference (the iteration's init model); 0 loads no reference "
        "model (TRL's default). Default: 0.",
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = Field(
        default="dapo", description="TRL loss aggregation: grpo, dr_grpo, dapo, bnpo, cispo, sapo. Default: dapo."
    )
    max_completion_length: int = Field(
        default=32, ge=1, le=32768, description="Tokens generated per rollout. Default: 32."
    )
    temperature: float = Field(
        default=1.0, gt=0.0, le=5.0, description="Sampling temperature of the rollouts. Default: 1.0."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Advantage scaling: group (divide by the group's reward std), batch, or none (Dr. GRPO). "
        "Default: group.",
    )

"""`SelfImprovementLoop` v1alpha1: the spec a user writes.

Every field carries its type, default and interactions in its description: the same text becomes the CRD's
`kubectl explain` output and the error messages of `sil validate`. Unknown fields are rejected (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sil_operator.gates.cel import check_condition

API_GROUP = "selfimprove.dev"
API_VERSION = "v1alpha1"
KIND = "SelfImprovementLoop"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_USER_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
BUILTIN_VERIFIERS = ("exact-match",)
QUERY_PLACEHOLDERS = ("loop", "namespace", "iteration", "model")


def dns_label(value: str, max_length: int = 63, why: str = "") -> str:
    """Names that become Kubernetes names or label values: lowercase letters, digits and '-'."""
    if not _DNS_LABEL.match(value) or len(value) > max_length:
        raise ValueError(
            f"expected a DNS label{why}: lowercase letters, digits and '-', at most {max_length} characters"
        )
    return value


def unique_names(items: list[Any], what: str) -> None:
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique")


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=False,
    )


class ModelSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="The base model: a transformers checkpoint directory. s3://bucket/prefix, file:///path "
        "(or a path relative to the loop file for `sil run`), or hf://org/name on clusters with hub access. "
        "Iteration 1 samples from it; it stays the champion until a candidate is promoted.",
    )


class StorageSpec(ApiModel):
    uri: str = Field(
        min_length=1,
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
    credentials_secret: str | None = Field(
        default=None,
        description="Name of a Secret in the loop's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "given to stage Jobs as environment variables. Default: none (IAM role or node credentials).",
    )


class StageRuntime(ApiModel):
    """How a stage runs: container image and scheduling on Kubernetes, retries everywhere."""

    image: str | None = Field(default=None, description="Stage container image. Required on Kubernetes.")
    resources: dict[Literal["limits", "requests"], dict[str, int | str]] | None = Field(
        default=None,
        description="Container resources, e.g. {limits: {nvidia.com/gpu: 1, memory: 64Gi}}. Default: none.",
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Pod nodeSelector. Default: none.")
    tolerations: list[dict[str, Any]] | None = Field(default=None, description="Pod tolerations. Default: none.")
    service_account_name: str | None = Field(
        default=None, description="Pod service account. Default: namespace default."
    )
    image_pull_secrets: list[str] | None = Field(default=None, description="Names of image pull Secrets.")
    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue name: Jobs get the kueue.x-k8s.io/queue-name label and are created "
        "suspended for Kueue to admit. Default: no queue.",
    )
    backoff_limit: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="How many times a failed stage is retried before the loop fails. Default: 2.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="A stage running longer than this fails. Default: no deadline."
    )
    env: dict[str, str] | None = Field(default=None, description="Extra environment variables for the stage.")
    pod_labels: dict[str, str] | None = Field(default=None, description="Extra labels on the stage's pods.")
    pod_annotations: dict[str, str] | None = Field(
        default=None, description="Extra annotations on the stage's pods (e.g. to opt out of sidecar injection)."
    )
    pod_security_context: dict[str, Any] | None = Field(
        default=None,
        description="Pod securityContext (a PodSecurityContext object). Replaces the default, which meets the "
        "`restricted` Pod Security Standard: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}.",
    )
    security_context: dict[str, Any] | None = Field(
        default=None,
        description="The stage container's securityContext (a SecurityContext object). Replaces the default, "
        "which meets the `restricted` Pod Security Standard: {allowPrivilegeEscalation: false, capabilities: "
        "{drop: [ALL]}}.",
    )


class StageOverrides(ApiModel):
    """Per-stage runtime overrides; a field set for a stage replaces the default for that stage."""

    acquire: StageRuntime | None = Field(default=None, description="Overrides for acquire Jobs.")
    select: StageRuntime | None = Field(default=None, description="Overrides for select Jobs.")
    optimize: StageRuntime | None = Field(
        default=None, description="Overrides for optimize Jobs, e.g. {resources: {limits: {nvidia.com/gpu: 8}}}."
    )
    evaluate: StageRuntime | None = Field(default=None, description="Overrides for evaluate Jobs.")


class RuntimeSpec(StageRuntime):
    """Defaults for every stage; `stages.<name>` overrides them field by field."""

    stages: StageOverrides = Field(
        default_factory=StageOverrides,
        description="Per-stage overrides of the fields above. A field set for a stage replaces the default.",
    )

    def for_stage(self, stage: str) -> StageRuntime:
        """The effective runtime of one stage: the defaults, with that stage's fields laid over them."""
        base = StageRuntime.model_validate(self.model_dump(exclude={"stages"}))
        override: StageRuntime | None = getattr(self.stages, stage)
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_unset=True))


DEFAULT_BACKOFF_LIMIT = 2


class PromptSource(ApiModel):
    uri: str = Field(min_length=1, description="JSONL file of prompts: one object per line with a `prompt` field.")
    per_iteration: int | None = Field(
        default=None,
        ge=1,
        description="Prompts drawn per iteration (a different deterministic draw each iteration). Default: all.",
    )


class SamplingSpec(ApiModel):
    temperature: float = Field(default=1.0, ge=0.0, le=5.0, description="Sampling temperature. Default: 1.0.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass. Default: 1.0.")
    max_new_tokens: int = Field(default=32, ge=1, le=32768, description="Tokens generated per sample. Default: 32.")


class AcquireSpec(ApiModel):
    prompts: PromptSource = Field(description="The prompts the champion answers. Required.")
    samples_per_prompt: int = Field(default=4, ge=1, le=256, description="Completions per prompt. Default: 4.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="Sampling parameters.")
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="Generation engine: transformers (CPU or GPU) or vllm (GPU, needs the [gpu] extra). "
        "Default: transformers.",
    )
    batch_size: int = Field(default=64, ge=1, description="Prompts per generation batch. Default: 64.")


class ScorerSpec(ApiModel):
    type: Literal["verifier", "majority-vote"] = Field(
        default="verifier",
        description="verifier: a program checks each completion. majority-vote: label-free, the most common "
        "answer among a prompt's samples is taken as correct (self-consistency); needs samplesPerPrompt >= 2. "
        "Default: verifier.",
    )
    verifier: str = Field(
        default="exact-match",
        description="For type verifier: exact-match (the extracted answer equals the prompt record's `answer` "
        "after normalization) or a Python function `module:function(prompt, completion, record) -> float` "
        "importable by the stage. Default: exact-match.",
    )
    answer_pattern: str | None = Field(
        default=None,
        description="Regular expression extracting the answer from a completion (first group, else the whole "
        "match). Default: the first line of the completion.",
    )

    min_vote_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="For type majority-vote: a prompt whose majority answer has a smaller share of its samples "
        "gets no pseudo-label (weak majorities are often wrong). Default: 0 (always vote).",
    )

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, value: str) -> str:
        if value not in BUILTIN_VERIFIERS and not _USER_FUNCTION.match(value):
            raise ValueError(
                f"unknown verifier {value!r}: expected one of {', '.join(BUILTIN_VERIFIERS)} "
                "or a Python function as module:function"
            )
        return value

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from error
        return value


class KeepSpec(ApiModel):
    min_score: float = Field(default=1.0, description="Keep completions scoring at least this. Default: 1.0.")
    max_per_prompt: int | None = Field(
        default=None, ge=1, description="Keep at most this many completions per prompt. Default: no limit."
    )
    dedupe: bool = Field(default=True, description="Drop identical completions of the same prompt. Default: true.")


class SelectSpec(ApiModel):
    scorer: ScorerSpec = Field(default_factory=ScorerSpec, description="How completions are scored.")
    keep: KeepSpec = Field(default_factory=KeepSpec, description="Which scored completions become training data.")


class HyperparametersSpec(ApiModel):
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
    deepspeed: str | None = Field(default=None, description="DeepSpeed config (path in the image, or JSON).")


class OptimizeSpec(ApiModel):
    method: Literal["sft"] = Field(
        default="sft",
        description="sft: supervised fine-tuning on the selected completions with TRL's SFTTrainer "
        "(rejection sampling / STaR / ReST-EM). Default: sft.",
    )
    init_from: Literal["base", "champion"] = Field(
        default="champion",
        description="champion: continue from the current champion. base: train the base model on this "
        "iteration's data (ReST-EM style). Default: champion.",
    )
    hyperparameters: HyperparametersSpec = Field(default_factory=HyperparametersSpec, description="TRL settings.")


class EvalDatasetSpec(ApiModel):
    name: str = Field(description="Dataset name, a DNS label; it becomes the `dataset` metric label.")
    uri: str = Field(min_length=1, description="JSONL with `prompt` and `answer` fields.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        return dns_label(value)


class RefinementSpec(ApiModel):
    method: Literal["none", "self-consistency"] = Field(
        default="self-consistency",
        description="Inference refinement measured at evaluation: self-consistency@k (majority answer of "
        "`samples` samples). Default: self-consistency.",
    )
    samples: int = Field(default=8, ge=1, le=256, description="k for self-consistency@k. Default: 8.")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="Sampling temperature. Default: 0.7.")


class EvaluateSpec(ApiModel):
    datasets: list[EvalDatasetSpec] = Field(
        min_length=1,
        description="Held-out datasets. The first is the primary one: its greedy accuracy is the score shown as "
        "the champion's score and compared with stopping.targetScore.",
    )
    refinement: RefinementSpec = Field(default_factory=RefinementSpec, description="Inference refinement.")
    verifier: str = Field(
        default="exact-match",
        description="How an answer is judged correct: exact-match against the dataset's `answer`, or a "
        "function module:function. Default: exact-match.",
    )
    answer_pattern: str | None = Field(
        default=None, description="Regex extracting the answer; default: select.scorer.answerPattern."
    )
    max_new_tokens: int | None = Field(
        default=None, ge=1, description="Tokens generated per answer. Default: acquire.sampling.maxNewTokens."
    )
    batch_size: int = Field(default=64, ge=1, description="Prompts per generation batch. Default: 64.")
    pushgateway: PushgatewaySpec | None = Field(
        default=None,
        description="Push the evaluation metrics to this Pushgateway (for Prometheus gates and dashboards). "
        "Default: none (metrics stay in the evaluate manifest).",
    )

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, value: list[EvalDatasetSpec]) -> list[EvalDatasetSpec]:
        unique_names(value, "dataset")
        return value


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Secret name, in the loop's namespace.")
    key: str = Field(min_length=1, description="Key in the Secret's data.")


class PrometheusSpec(ApiModel):
    address: str = Field(
        min_length=1, description="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090."
    )
    bearer_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a bearer token sent with every query (e.g. for a Prometheus behind an "
        "auth proxy). Default: no token.",
    )
    ca_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a PEM CA bundle to verify the server's TLS certificate."
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip TLS certificate verification (testing only). Default: false."
    )
    timeout_seconds: int = Field(default=10, ge=1, le=300, description="Query timeout. Default: 10.")


class PushgatewaySpec(ApiModel):
    address: str = Field(
        min_length=1,
        description="Pushgateway base URL the evaluate stage pushes selfimprove_eval_* gauges to, grouped by "
        "namespace, loop and iteration, e.g. http://pushgateway.monitoring:9091.",
    )


class GateSpec(ApiModel):
    """A promotion gate, modeled on Argo Rollouts analysis metrics."""

    name: str = Field(description="Gate name, a DNS label.")
    query: str = Field(
        min_length=1,
        description="PromQL. Placeholders: {{loop}}, {{namespace}}, {{iteration}}, {{model}}. The query runs "
        "with {{model}}=candidate and its value is `result`; if it has {{model}}, it also runs with "
        "{{model}}=champion and that value is `champion`. Without promotion.prometheus, the query must be an "
        "instant-vector selector, read from the evaluate stage's metrics.",
    )
    success_condition: str | None = Field(
        default=None,
        description="CEL expression over `result` and `champion`; true means the measurement succeeded, e.g. "
        "result >= champion + 0.01.",
    )
    failure_condition: str | None = Field(
        default=None, description="CEL expression; true means the measurement failed, e.g. result < 0.5."
    )
    count: int = Field(default=1, ge=1, le=100, description="Measurements to take. Default: 1.")
    interval_seconds: int = Field(default=0, ge=0, description="Seconds between measurements. Default: 0.")
    initial_delay_seconds: int = Field(default=0, ge=0, description="Wait before the first measurement. Default: 0.")
    failure_limit: int = Field(default=0, ge=0, description="Failed measurements tolerated. Default: 0.")
    inconclusive_limit: int = Field(
        default=0, ge=0, description="Inconclusive measurements (empty result) tolerated. Default: 0."
    )
    consecutive_error_limit: int = Field(
        default=4, ge=0, description="Consecutive errors (query failed) tolerated before Error. Default: 4."
    )
    dry_run: bool = Field(
        default=False, description="Measure and record, but do not let this gate decide. Default: false."
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        return dns_label(value)

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _valid_cel(cls, value: str | None) -> str | None:
        if value is not None:
            check_condition(value)
        return value

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        for match in _PLACEHOLDER.finditer(value):
            if match.group(1) not in QUERY_PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {match.group(0)}: expected one of "
                    + ", ".join("{{" + p + "}}" for p in QUERY_PLACEHOLDERS)
                )
        return value

    @model_validator(mode="after")
    def _has_condition(self) -> GateSpec:
        if self.success_condition is None and self.failure_condition is None:
            raise ValueError("a gate needs successCondition, failureCondition or both")
        return self


class PromotionSpec(ApiModel):
    prometheus: PrometheusSpec | None = Field(
        default=None,
        description="Where gates query. Default: none; gates then read the evaluate stage's metrics from its "
        "manifest (local runs).",
    )
    gates: list[GateSpec] = Field(
        min_length=1,
        description="All non-dry-run gates must succeed for the candidate to be promoted. A failed, "
        "inconclusive or errored gate rejects it; the champion is unchanged.",
    )

    @field_validator("gates")
    @classmethod
    def _unique_names(cls, value: list[GateSpec]) -> list[GateSpec]:
        unique_names(value, "gate")
        return value


class StoppingSpec(ApiModel):
    target_score: float | None = Field(
        default=None,
        ge=0.0,
        description="Stop (Succeeded) once the champion's primary score reaches this. Default: no target.",
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        description="Stop (Succeeded) after this many consecutive rejected iterations. Default: never.",
    )


def default_promotion() -> PromotionSpec:
    """Promote when the primary dataset's greedy score improves on the champion's."""
    return PromotionSpec(
        gates=[
            GateSpec(
                name="primary-score-improves",
                query='selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",model="{{model}}"}',
                success_condition="result > champion",
            )
        ]
    )


class LoopSpec(ApiModel):
    model: ModelSpec = Field(description="The base model. Required.")
    storage: StorageSpec = Field(description="Where data and checkpoints live. Required.")
    max_iterations: int = Field(ge=1, le=1000, description="Iterations to run at most. Required.")
    suspend: bool = Field(
        default=False,
        description="true: start no new stage (running ones finish). false: run. Default: false.",
    )
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="How stages run.")
    acquire: AcquireSpec = Field(description="Data acquisition: the champion samples completions. Required.")
    select: SelectSpec = Field(default_factory=SelectSpec, description="Data selection: scoring and filtering.")
    optimize: OptimizeSpec = Field(default_factory=OptimizeSpec, description="Model optimization.")
    evaluate: EvaluateSpec = Field(description="Autonomous evaluation: candidate vs champion. Required.")
    promotion: PromotionSpec = Field(
        default_factory=default_promotion,
        description="Promotion gates. Default: one gate, the primary dataset's score must beat the champion's.",
    )
    stopping: StoppingSpec = Field(default_factory=StoppingSpec, description="Early stopping.")

    @model_validator(mode="after")
    def _majority_vote_needs_samples(self) -> LoopSpec:
        if self.select.scorer.type == "majority-vote" and self.acquire.samples_per_prompt < 2:
            raise ValueError(
                "select.scorer.type majority-vote needs acquire.samplesPerPrompt >= 2 (a vote needs voters)"
            )
        return self


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str = "default"
    generation: int = 1

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        return dns_label(value, 40, " (it prefixes Job names)")


class SelfImprovementLoop(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    api_version: Literal["selfimprove.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SelfImprovementLoop"]
    metadata: ObjectMeta
    spec: LoopSpec
    status: dict[str, Any] | None = None

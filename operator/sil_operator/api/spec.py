"""`SelfImprovementLoop` v1alpha1: the spec a user writes.

Every field carries its type, default and interactions in its description: the same text becomes the CRD's
`kubectl explain` output and the error messages of `sil validate`. Unknown fields are rejected (a typo must not
silently fall back to a default).

Each rule is written once: settings that a stage is also given (sampling, scorer, keep, hyperparameters,
refinement, datasets, storage) are the stage contract's own models (`sil_stages.core.settings`); field-level rules are
pydantic constraints and patterns, which the CRD's schema carries; cross-field rules are CEL (`cel_rules`), which
the CRD carries as x-kubernetes-validations and `sil validate` evaluates too (api/rules.py). The few rules the API
server cannot check (a regex or a CEL condition given as a value must compile) are Python-only and say so.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from sil_operator.api.rules import CelRule, CelValidated
from sil_operator.gates.cel import check_condition
from sil_stages.core.methods import METHODS
from sil_stages.core.optimization import Optimization
from sil_stages.core.scorers import SCORERS
from sil_stages.core.settings import (
    DNS_LABEL_PATTERN,
    JUDGE_REQUIRES,
    SELF_INSTRUCT_REQUIRES,
    SELF_REFINE_REQUIRES,
    Accumulate,
    ChatFormat,
    DataUri,
    DnsLabel,
    EvalDataset,
    FunctionRef,
    Generation,
    Judging,
    Keep,
    Matching,
    MaxNewTokens,
    ModelUri,
    Pairs,
    Scorer,
    SelfInstruct,
    StorageOptions,
    validations_schema,
)

API_GROUP = "selfimprove.dev"
API_VERSION = "v1alpha1"
KIND = "SelfImprovementLoop"

QUERY_PLACEHOLDERS = ("loop", "namespace", "iteration", "dataset", "model")
_PLACEHOLDER = r"\{\{\s*(" + "|".join(QUERY_PLACEHOLDERS) + r")\s*\}\}"
QUERY_PATTERN = r"^([^{]|\{[^{]|\{$|" + _PLACEHOLDER + r")*$"
"""A query whose every `{{...}}` is a known placeholder (`{` alone, as in label matchers, is fine)."""
QUERY_EXPECTED = "PromQL whose placeholders are among " + ", ".join("{{" + p + "}}" for p in QUERY_PLACEHOLDERS)
MAX_QUERY_LENGTH = 2048
"""Bounds the API server's cost estimate of the query's CEL rule (GateSpec)."""


def _known_placeholders(value: str) -> str:
    if re.fullmatch(QUERY_PATTERN, value) is None:
        raise PydanticCustomError("pattern_mismatch", "expected {expected}", {"expected": QUERY_EXPECTED})
    return value


Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_LENGTH), AfterValidator(_known_placeholders)]
"""Checked by pydantic here and by the API server as GateSpec's CEL rule, one pattern and one message: a schema
`pattern` would make the API server answer with the raw regular expression."""

MAX_DATASETS = 16
MAX_GATES = 16
"""List bounds: they keep the API server's cost estimate of the uniqueness rules below its budget."""


def _valid_condition(value: str | None) -> str | None:
    # Python only: the API server cannot compile CEL given as a value. parse_loop (and so the operator, which marks
    # such a loop Failed with reason InvalidSpec) still rejects it.
    if value is not None:
        check_condition(value)
    return value


Condition = Annotated[str | None, AfterValidator(_valid_condition)]


def unique_names_rule(field: str, what: str) -> CelRule:
    """The items of list `field` have distinct `name`s (also a list-map key, for server-side apply merges)."""
    return CelRule(
        rule=f"self.{field}.all(x, self.{field}.exists_one(y, y.name == x.name))",
        message=f"{what} names must be unique",
        field_path=f".{field}",
    )


LIST_MAP_BY_NAME: dict[str, JsonValue] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class ApiModel(CelValidated):
    """camelCase on the wire, snake_case in Python; unknown fields are errors; `cel_rules` reach the CRD."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=False,
        json_schema_extra=validations_schema,
    )


class ModelSpec(ApiModel, ChatFormat):
    uri: ModelUri = Field(
        description="The base model: a transformers checkpoint directory. s3://bucket/prefix, file:///path "
        "(or a path relative to the loop file for `sil run`), or hf://org/name on clusters with hub access. "
        "Iteration 1 samples from it; it stays the champion until a candidate is promoted.",
    )


class StorageSpec(StorageOptions):
    """The contract's storage options, plus the Secret the operator hands to stage Jobs."""

    credentials_secret: str | None = Field(
        default=None,
        description="Name of a Secret in the loop's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "given to stage Jobs as environment variables. Default: none (IAM role or node credentials).",
    )


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
Quantity = Annotated[str, Matching(QUANTITY_PATTERN, "a Kubernetes quantity of bytes, e.g. 16Gi, 512Mi or 100G")]
DEFAULT_SHM_SIZE = "16Gi"
"""/dev/shm of GPU stage pods unless runtime.shmSize says otherwise: NCCL's shared-memory transport and the data
loaders' worker processes need far more than the container runtime's 64 MiB. Memory-backed: what is written there
counts against the pod's memory limit."""
SCRATCH_ONE_SOURCE = "runtime.scratch needs exactly one of size (an emptyDir) and claimName (a PersistentVolumeClaim)"


class ScratchVolume(ApiModel):
    """The /scratch volume of stage pods (HOME, the Hugging Face and model caches): node disk or a claim."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(rule="has(self.size) != has(self.claimName)", message=SCRATCH_ONE_SOURCE),
    )

    size: Quantity | None = Field(
        default=None,
        description="An emptyDir of at most this size (its sizeLimit), e.g. 100Gi: gone with the pod. Exactly one "
        "of size and claimName.",
    )
    claim_name: DnsLabel | None = Field(
        default=None,
        description="A PersistentVolumeClaim in the loop's namespace, mounted read-write: the model cache outlives "
        "the pod (stages of one loop reuse downloaded checkpoints; ReadWriteMany if stages may run at once on "
        "several nodes). Exactly one of size and claimName.",
    )


GroupWorkload = Literal["auto", "indexed-job", "jobset"]


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
        "suspended for Kueue to admit. A stage waiting for admission is Queued; one Kueue suspends after it started "
        "is Preempted (not a failed attempt) and continues when readmitted. Default: no queue.",
    )
    priority_class: str | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass name: Jobs get the kueue.x-k8s.io/priority-class label, which "
        "orders admission and preemption within the queue. Default: none (the queue's default priority).",
    )
    shm_size: Quantity | None = Field(
        default=None,
        description=f"Size limit of the memory-backed /dev/shm that pods requesting or limiting a GPU (any */gpu "
        f"resource) get; it counts against the pod's memory limit. Default: {DEFAULT_SHM_SIZE}.",
    )
    scratch: ScratchVolume | None = Field(
        default=None,
        description="The /scratch volume (HOME, HF_HOME, the model cache SIL_MODEL_CACHE): {size: 100Gi} for an "
        "emptyDir with that size limit, or {claimName: my-pvc} for a PersistentVolumeClaim. Default: an emptyDir "
        "without a size limit.",
    )
    workload: GroupWorkload | None = Field(
        default=None,
        description="How a multi-node stage (optimize with distributed.nodes > 1) runs its group of pods: "
        "indexed-job (an Indexed Job with a headless Service: built into every cluster), jobset (a JobSet, "
        "jobset.x-k8s.io/v1alpha2), or auto (a JobSet when the API server serves that API, else an Indexed Job). "
        "Single-pod stages always run as a plain Job. Default: auto.",
    )
    engine: GroupWorkload | None = Field(
        default=None,
        description="Deprecated: workload replaces it (engine also names acquire's generation library); "
        "workload wins when both are set. Still read when workload is not set.",
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_is_workload(cls, data: Any) -> Any:
        """The deprecated `engine` read as `workload` when that is not set, before a stage's fields are laid over
        the defaults (so a stage's old `engine` still overrides the default `workload`)."""
        if isinstance(data, dict):
            old = data.get("engine")
            if old is not None and data.get("workload") is None:
                return {**data, "workload": old}
        return data

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
        base = self.model_dump(exclude={"stages"})
        override: StageRuntime | None = getattr(self.stages, stage)
        if override is not None:
            base.update(override.model_dump(exclude_unset=True))
        return StageRuntime.model_validate(base)


DEFAULT_BACKOFF_LIMIT = 2


PROMPTS_ONE_SOURCE = "acquire.prompts needs uri (a JSONL file of prompts) or generator (module:function)"
PROMPTS_TWO_SOURCES = "acquire.prompts.generator and acquire.prompts.uri exclude each other: set one"
SELF_INSTRUCT_POOL = (
    "acquire.prompts.selfInstruct needs acquire.prompts.uri: the file of prompts its examples are drawn from"
)
SELF_INSTRUCT_TEMPLATE_MESSAGE = (
    f"acquire.prompts.selfInstruct.template must contain {SELF_INSTRUCT_REQUIRES.listed} (the drawn pool prompts)"
)


class PromptSource(ApiModel):
    """Where acquire's prompts come from: a JSONL file or a Python generator; optionally grown by Self-Instruct."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(rule="has(self.uri) || has(self.generator)", message=PROMPTS_ONE_SOURCE),
        CelRule(rule="!has(self.uri) || !has(self.generator)", message=PROMPTS_TWO_SOURCES, field_path=".generator"),
        CelRule(
            rule="!has(self.selfInstruct) || has(self.uri)", message=SELF_INSTRUCT_POOL, field_path=".selfInstruct"
        ),
        CelRule(
            rule="!has(self.selfInstruct) || !has(self.selfInstruct.template) || "
            + SELF_INSTRUCT_REQUIRES.cel_rule("self.selfInstruct.template"),
            message=SELF_INSTRUCT_TEMPLATE_MESSAGE,
            field_path=".selfInstruct.template",
        ),
    )

    uri: DataUri | None = Field(
        default=None,
        description="JSONL file of prompts, one object per line with a `prompt` field (other fields, e.g. an "
        "`answer`, are carried along): s3://bucket/key, file:///path, or a path relative to the loop file for "
        "`sil run`. Exactly one of uri and generator.",
    )
    generator: FunctionRef | None = Field(
        default=None,
        description="A Python function module:function(iteration, seed, count) returning an iterable of dicts, "
        "each with a string `prompt` (other fields are carried along), importable by the stage (`sil run` puts "
        "the loop file's folder on the path). seed is derived from the loop seed and the iteration; count is "
        "perIteration (null: the generator's own default). The same arguments must give the same prompts (a "
        "retried stage draws again). Exactly one of uri and generator.",
    )
    per_iteration: int | None = Field(
        default=None,
        ge=1,
        description="Prompts drawn per iteration (a different deterministic draw each iteration; a generator is "
        "given it as count). Default: all.",
    )
    self_instruct: SelfInstruct | None = Field(
        default=None,
        description="The champion also writes new prompts from examples drawn from the file (needs uri); the "
        "novel ones are added to the drawn prompts. Default: none.",
    )


class AcquireSpec(Generation):
    """The prompts, and the generation settings the acquire stage is given as they are (sil_stages.core.settings)."""

    prompts: PromptSource = Field(description="The prompts the champion answers. Required.")


class SelectSpec(ApiModel):
    scorer: Scorer = Field(default_factory=Scorer, description="How completions are scored.")
    keep: Keep = Field(
        default_factory=Keep,
        description="Which scored completions become training data. Used by methods that train on completions (sft).",
    )
    pairs: Pairs = Field(
        default_factory=Pairs,
        description="How scored completions become preference pairs. Used by methods that train on pairs (dpo).",
    )
    accumulate: Accumulate = Field(
        default_factory=Accumulate,
        description="Train on the data kept in all iterations so far, not this iteration's only. Default: off.",
    )


def method_rules() -> tuple[CelRule, ...]:
    """From the methods' specs: each method's settings block only with that method, and each method's checks."""
    rules: list[CelRule] = []
    for method in METHODS.values():
        if method.settings is not None:
            rules.append(
                CelRule(
                    rule=f"!has(self.{method.name}) || self.method == '{method.name}'",
                    message=f"optimize.{method.name} holds the settings of method {method.name}; set method: "
                    f"{method.name} or remove the block",
                    field_path=f".{method.name}",
                )
            )
        rules.extend(CelRule(rule=c.rule, message=c.message, field_path=c.field_path) for c in method.checks)
    return tuple(rules)


class OptimizeSpec(ApiModel, Optimization):
    """The training settings the optimize stage is given as they are (sil_stages.core.optimization), plus init."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = method_rules()

    init_from: Literal["base", "champion"] = Field(
        default="champion",
        description="champion: continue from the current champion. base: train the base model on this "
        "iteration's data (ReST-EM style). Default: champion.",
    )


class EvaluateSpec(ApiModel, Judging):
    """The datasets, and the judging settings the evaluate stage is given as they are (sil_stages.core.settings)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        unique_names_rule("datasets", "dataset"),
        CelRule(
            rule="!has(self.datasets[0].harness)",
            message="evaluate.datasets[0] must be a JSONL dataset (uri): its greedy accuracy is the primary score; "
            "put harness entries after it",
            field_path=".datasets",
        ),
        CelRule(
            rule="!has(self.refinement) || !has(self.refinement.passAtK) || "
            "self.refinement.passAtK.all(k, k <= self.refinement.samples)",
            message="evaluate.refinement.passAtK: every k must be at most evaluate.refinement.samples (pass@k "
            "draws k of those samples); lower k or raise samples",
            field_path=".refinement.passAtK",
        ),
        CelRule(
            rule="!has(self.refinement) || !has(self.refinement.selfRefine) || "
            "!has(self.refinement.selfRefine.template) || "
            + SELF_REFINE_REQUIRES.cel_rule("self.refinement.selfRefine.template"),
            message=f"evaluate.refinement.selfRefine.template must contain {SELF_REFINE_REQUIRES.listed} (the "
            "question and the answer to revise)",
            field_path=".refinement.selfRefine.template",
        ),
    )

    datasets: list[EvalDataset] = Field(
        min_length=1,
        max_length=MAX_DATASETS,
        json_schema_extra=LIST_MAP_BY_NAME,
        description="Held-out datasets. The first is the primary one: its greedy accuracy is the score shown as "
        "the champion's score and compared with stopping.targetScore.",
    )
    max_new_tokens: MaxNewTokens | None = Field(
        default=None, description="Tokens generated per answer. Default: acquire.sampling.maxNewTokens."
    )
    pushgateway: PushgatewaySpec | None = Field(
        default=None,
        description="Deprecated: spec.pushgateway replaces it (every stage pushes there, not only evaluate); it "
        "wins when both are set. Still read when spec.pushgateway is not set.",
    )


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
        description="Pushgateway base URL every stage pushes its series to (selfimprove_acquire_*, _select_*, "
        "_optimize_*, _eval_*), grouped by namespace, loop and iteration, e.g. http://pushgateway.monitoring:9091.",
    )


class GateSpec(ApiModel):
    """A promotion gate, modeled on Argo Rollouts analysis metrics."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.successCondition) || has(self.failureCondition)",
            message="a gate needs successCondition, failureCondition or both",
        ),
        CelRule(
            rule=f"self.query.matches(r'{QUERY_PATTERN}')",
            message=f"query: expected {QUERY_EXPECTED}",
            field_path=".query",
        ),
    )

    name: DnsLabel = Field(description="Gate name, a DNS label.")
    query: Query = Field(
        description="PromQL. Placeholders: {{loop}}, {{namespace}}, {{iteration}}, {{dataset}} (the primary, "
        "i.e. first, evaluate.datasets name), {{model}}. The query runs "
        "with {{model}}=candidate and its value is `result`; if it has {{model}}, it also runs with "
        "{{model}}=champion and that value is `champion`. Without promotion.prometheus, the query must be an "
        "instant-vector selector, read from the evaluate stage's metrics.",
    )
    success_condition: Condition = Field(
        default=None,
        description="CEL expression over `result` and `champion`; true means the measurement succeeded, e.g. "
        "result >= champion + 0.01.",
    )
    failure_condition: Condition = Field(
        default=None, description="CEL expression; true means the measurement failed, e.g. result < 0.5."
    )
    count: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Conclusive (Successful or Failed) measurements to take; an Inconclusive one (empty result) is "
        "taken again, up to inconclusiveLimit. Default: 1.",
    )
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


class PromotionSpec(ApiModel):
    cel_rules: ClassVar[tuple[CelRule, ...]] = (unique_names_rule("gates", "gate"),)

    prometheus: PrometheusSpec | None = Field(
        default=None,
        description="Where gates query. Default: none; gates then read the evaluate stage's metrics from its "
        "manifest (local runs).",
    )
    gates: list[GateSpec] = Field(
        min_length=1,
        max_length=MAX_GATES,
        json_schema_extra=LIST_MAP_BY_NAME,
        description="All non-dry-run gates must succeed for the candidate to be promoted. A failed, "
        "inconclusive or errored gate rejects it; the champion is unchanged.",
    )


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


def _series_selector(metric: str, *labels: str) -> str:
    matchers = ",".join(f'{label}="{{{{{label}}}}}"' for label in ("namespace", "loop", "iteration", *labels))
    return f"{metric}{{{matchers}}}"


DEFAULT_GATE = "primary-improves-significantly"


def default_promotion() -> PromotionSpec:
    """Promote when the candidate is better than the champion on the primary dataset beyond chance: the lower bound
    of the paired bootstrap interval of candidate minus champion (evaluate.significance) is above 0."""
    return PromotionSpec(
        gates=[
            GateSpec(
                name=DEFAULT_GATE,
                query=_series_selector("selfimprove_eval_delta_ci_low", "dataset"),
                success_condition="result > 0",
            )
        ]
    )


CONTAMINATION_GATE = "evaluate-contamination"
"""The gate evaluate.contamination.maxOverlap adds to promotion.gates."""


def contamination_gate(max_overlap: float) -> GateSpec:
    """Fails when any evaluation dataset has a larger share of items found in this iteration's training data."""
    return GateSpec(
        name=CONTAMINATION_GATE,
        query=_series_selector("selfimprove_eval_contamination_max"),
        success_condition=f"result <= {max_overlap:.6f}",
    )


def _as_dict(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(value, BaseModel) else value


def with_contamination_gate(data: Any) -> Any:
    """The raw spec with the evaluate-contamination gate appended when evaluate.contamination.maxOverlap is set.

    Done on the raw input, before the fields are validated, so that everything that reads promotion.gates (the
    planner, both runners, the status) sees one more gate and no code path has to remember it. Malformed input is
    left as it is: field validation then reports it, naming the field.
    """
    if not isinstance(data, dict):
        return data
    evaluate = _as_dict(data.get("evaluate"))
    contamination = _as_dict(evaluate.get("contamination")) if isinstance(evaluate, dict) else None
    if not isinstance(contamination, dict):
        return data
    max_overlap = contamination.get("maxOverlap", contamination.get("max_overlap"))
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, int | float):
        return data
    promotion = data.get("promotion")
    promotion = _as_dict(default_promotion() if promotion is None else promotion)
    gates = promotion.get("gates") if isinstance(promotion, dict) else None
    if not isinstance(gates, list):
        return data
    if any(_as_dict(gate).get("name") == CONTAMINATION_GATE for gate in gates if isinstance(_as_dict(gate), dict)):
        return data
    gate = _as_dict(contamination_gate(float(max_overlap)))
    return {**data, "promotion": {**promotion, "gates": [*gates, gate]}}


class LoopSpec(ApiModel):
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *(
            CelRule(rule=check.rule, message=check.message, field_path=check.field_path)
            for scorer in SCORERS.values()
            for check in scorer.checks
        ),
        CelRule(
            rule="!has(self.select.scorer.judge) || !has(self.select.scorer.judge.template) || "
            + JUDGE_REQUIRES.cel_rule("self.select.scorer.judge.template"),
            message=f"select.scorer.judge.template must contain {JUDGE_REQUIRES.listed} (the question and the "
            "answer judged)",
            field_path=".select.scorer.judge.template",
        ),
        CelRule(
            rule="!has(self.optimize) || !has(self.optimize.checkpointSelection) || self.evaluate.datasets.all(d, "
            "!has(d.uri) || d.uri != self.optimize.checkpointSelection.validationUri)",
            message="optimize.checkpointSelection.validationUri is an evaluation dataset (evaluate.datasets[].uri): "
            "the candidate would be chosen on the data that judges it; give it a validation file of its own",
            field_path=".optimize.checkpointSelection.validationUri",
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _contamination_gate(cls, data: Any) -> Any:
        return with_contamination_gate(data)

    model: ModelSpec = Field(description="The base model. Required.")
    storage: StorageSpec = Field(description="Where data and checkpoints live. Required.")
    max_iterations: int = Field(ge=1, le=1000, description="Iterations to run at most. Required.")
    suspend: bool = Field(
        default=False,
        description="true: start no new stage (running ones finish). false: run. Default: false.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        description="The loop's seed: every stage derives its own from it and the iteration (acquire's prompt draw "
        "and sampling, select's, training, evaluate's bootstrap), so a rerun repeats the loop. Default: 0.",
    )
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="How stages run.")
    pushgateway: PushgatewaySpec | None = Field(
        default=None,
        description="The Pushgateway every stage pushes its series to (for Prometheus gates, the dashboard and the "
        "alerts). Default: none (the numbers stay in the stage manifests).",
    )
    acquire: AcquireSpec = Field(description="Data acquisition: the champion samples completions. Required.")
    select: SelectSpec = Field(default_factory=SelectSpec, description="Data selection: scoring and filtering.")
    optimize: OptimizeSpec = Field(default_factory=OptimizeSpec, description="Model optimization.")
    evaluate: EvaluateSpec = Field(description="Autonomous evaluation: candidate vs champion. Required.")
    promotion: PromotionSpec = Field(
        default_factory=default_promotion,
        description="Promotion gates. Default: one gate, primary-improves-significantly: the lower bound of the "
        "interval of candidate minus champion on the primary dataset (selfimprove_eval_delta_ci_low, "
        "evaluate.significance) must be above 0. evaluate.contamination.maxOverlap adds a gate "
        "evaluate-contamination.",
    )
    stopping: StoppingSpec = Field(default_factory=StoppingSpec, description="Early stopping.")

    @property
    def loop_seed(self) -> int:
        """spec.seed, or the deprecated optimize.hyperparameters.seed it replaced, or 0."""
        if self.seed is not None:
            return self.seed
        return self.optimize.hyperparameters.seed or 0

    @property
    def pushgateway_address(self) -> str | None:
        """spec.pushgateway, or the deprecated evaluate.pushgateway it replaced: where every stage pushes."""
        chosen = self.pushgateway or self.evaluate.pushgateway
        return chosen.address if chosen else None

    def deprecations(self) -> tuple[str, ...]:
        """Fields still accepted under an old name: what to write instead. `sil validate` and `sil run` print
        them as warnings; the operator posts them as a Warning event (reason DeprecatedField) once per generation."""
        found = []
        if self.optimize.hyperparameters.seed is not None:
            found.append(
                "spec.optimize.hyperparameters.seed is deprecated: set spec.seed instead (the same seed of every "
                "stage; it wins when both are set)"
            )
        runtimes = {"spec.runtime": self.runtime} | {
            f"spec.runtime.stages.{stage}": override
            for stage in ("acquire", "select", "optimize", "evaluate")
            if (override := getattr(self.runtime.stages, stage)) is not None
        }
        found += [
            f"{path}.engine is deprecated: set {path}.workload instead (the kind of a multi-node stage's group of "
            "pods; engine also names acquire's generation library)"
            for path, runtime in runtimes.items()
            if runtime.engine is not None
        ]
        if self.evaluate.pushgateway is not None:
            found.append(
                "spec.evaluate.pushgateway is deprecated: set spec.pushgateway instead (every stage pushes there; "
                "it wins when both are set)"
            )
        return tuple(found)


MAX_NAME_LENGTH = 40
"""A loop's name prefixes its Job names (`<loop>-<iteration>-<stage>`), which must stay DNS labels."""


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str = "default"
    generation: int = 1


class SelfImprovementLoop(CelValidated):
    """The whole object. Its rules are the CRD's root x-kubernetes-validations (metadata has no schema of ours)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
            # No fieldPath: the CRD gives metadata no schema of its own to point into; the message names the field.
            message=f"metadata.name: expected a DNS label of at most {MAX_NAME_LENGTH} characters (it prefixes Job "
            "names): lowercase letters, digits and '-'",
        ),
    )
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    api_version: Literal["selfimprove.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SelfImprovementLoop"]
    metadata: ObjectMeta
    spec: LoopSpec
    status: dict[str, Any] | None = None

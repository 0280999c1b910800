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

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from sil_stages.core.scorers import SCORERS


@dataclass(frozen=True)
class CrossFieldRule:
    """A rule between the fields of one settings model, in its two forms side by side: `check` in Python (stage
    configs, which carry no CEL evaluator, and `sil validate`) and `cel` for the API server (the model's
    `x-kubernetes-validations` in the CRD). tests/invalid_specs.py breaks each rule once against both checkers."""

    cel: str
    """The CEL expression over `self` (this object, camelCase); true means valid."""
    message: str
    """What is wrong and what to do; both checkers report it."""
    check: Callable[[Any], bool]
    """The same rule over the Python object (snake_case fields)."""

    def to_schema(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message}


def validations_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """pydantic's `json_schema_extra` hook of every settings and spec model: its `cross_field` rules, and the spec
    models' `cel_rules` (sil_operator.api.rules), become its `x-kubernetes-validations`. One hook for both, because
    a spec model may also be a settings model and pydantic keeps one hook per model."""
    rules = (*getattr(model, "cross_field", ()), *getattr(model, "cel_rules", ()))
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class Settings(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (a typo must not become a default).

    `cross_field` rules are checked after the fields, wherever the model is used (the spec, a stage config)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        json_schema_extra=validations_schema,
    )
    cross_field: ClassVar[tuple[CrossFieldRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cross_field(self) -> Any:
        for rule in type(self).cross_field:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


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

EngineName = Literal["transformers", "vllm"]
"""Which library generates: transformers (CPU and GPU, every image) or vLLM (the GPU stage image only). Every stage
config's `engine` and spec.acquire.engine are this one type."""

PYTHON_OBJECT = r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*"
"""A Python object as `module:name` (a verifier, a prompt generator, a scorer class): the one form of all three."""

BUILTIN_VERIFIERS = ("exact-match", "math")
VERIFIER_PATTERN = "^(" + "|".join(BUILTIN_VERIFIERS) + "|" + PYTHON_OBJECT + ")$"
Verifier = Annotated[
    str,
    Matching(VERIFIER_PATTERN, "exact-match, math, or a Python function as module:function (e.g. arithmetic:verify)"),
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

FUNCTION_PATTERN = "^" + PYTHON_OBJECT + "$"
FunctionRef = Annotated[
    str, Matching(FUNCTION_PATTERN, "a Python function as module:function (e.g. problems:additions)")
]


MaxNewTokens = Annotated[int, Field(ge=1, le=32768)]
"""Tokens generated per answer: the bounds of every place that sets it (acquire's sampling, evaluate)."""
DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_MIN_SCORE = 1.0
"""select.keep.minScore's default: a completion is kept when it scores at least this (a verifier's 1.0 = correct)."""


AUTO = "auto"
"""The value of a temperature the loop chooses itself (acquire.sampling.temperature, optimize.grpo.temperature)."""
MAX_TEMPERATURE = 5.0


def _number_or_auto(expected: str) -> Callable[[Any, ValidatorFunctionWrapHandler], Any]:
    """One error for a value that is neither a number in bounds nor `auto`, instead of one per union member (whose
    locations would name pydantic's member tags, not the field)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, bool):  # YAML's `yes` is no temperature, though pydantic would read it as 1.0
            raise PydanticCustomError("number_or_auto", "expected {expected}", {"expected": expected})
        try:
            return handler(value)
        except ValidationError as error:
            raise PydanticCustomError("number_or_auto", "expected {expected}", {"expected": expected}) from error

    return validate


TemperatureOrAuto = Annotated[
    Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, strict=True)] | Literal["auto"],
    WrapValidator(_number_or_auto(f"a temperature from 0 to {MAX_TEMPERATURE:g}, or auto")),
]
"""acquire.sampling.temperature: a fixed temperature, or `auto` (the acquire stage chooses one per iteration)."""
RolloutTemperature = Annotated[
    Annotated[float, Field(gt=0.0, le=MAX_TEMPERATURE, strict=True)] | Literal["auto"],
    WrapValidator(_number_or_auto(f"a temperature above 0, at most {MAX_TEMPERATURE:g}, or auto")),
]
"""optimize.grpo.temperature: a fixed temperature, or `auto` (the one acquire sampled with this iteration)."""

_AUTO_BOUNDS = (0.3, 1.2)
"""autoTemperature's default search interval: from nearly greedy to hotter than the usual 1.0."""


class AutoTemperature(Settings):
    """The bounded search of `temperature: auto`: acquire samples `probePrompts` of the iteration's prompts at
    `points` temperatures evenly spaced from `min` to `max` (both included) and picks one (see temperature)."""

    minimum: float = Field(
        default=_AUTO_BOUNDS[0],
        alias="min",
        ge=0.0,
        le=MAX_TEMPERATURE,
        description=f"The lowest temperature probed. Default: {_AUTO_BOUNDS[0]}.",
    )
    maximum: float = Field(
        default=_AUTO_BOUNDS[1],
        alias="max",
        ge=0.0,
        le=MAX_TEMPERATURE,
        description=f"The highest temperature probed. Default: {_AUTO_BOUNDS[1]}.",
    )
    points: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Temperatures probed, evenly spaced from min to max (4: 0.3, 0.6, 0.9, 1.2). The probe costs "
        "points x probePrompts x samplesPerPrompt samples, scored by select.scorer. Default: 4.",
    )
    probe_prompts: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Prompts probed at each temperature: a seeded draw from the iteration's prompts (all of them "
        "when there are fewer), the same at every temperature. Default: 32.",
    )
    cross_field: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            cel=f"(has(self.min) ? self.min : {_AUTO_BOUNDS[0]}) <= (has(self.max) ? self.max : {_AUTO_BOUNDS[1]})",
            message="autoTemperature.min must not be above autoTemperature.max",
            check=lambda bounds: bounds.minimum <= bounds.maximum,
        ),
    )

    def grid(self) -> tuple[float, ...]:
        """The temperatures probed, ascending, without repeats (min = max probes one)."""
        if self.points == 1 or self.minimum == self.maximum:
            return (self.minimum,)
        step = (self.maximum - self.minimum) / (self.points - 1)
        return tuple(sorted({round(self.minimum + step * index, 6) for index in range(self.points)}))


TEMPERATURE_OBJECTIVE = (
    "auto: before sampling, acquire probes autoTemperature.probePrompts of the iteration's prompts (a seeded draw) "
    "at each temperature of autoTemperature's grid, samplesPerPrompt samples each, scores them with select.scorer, "
    "and samples the iteration at the temperature with the most expected kept examples per prompt: the mean over "
    "the probed prompts of the number of distinct completions scoring at least select.keep.minScore, capped at "
    "select.keep.topK when set, and 0 for a prompt whose pass rate lies outside select.keep.difficulty. Ties go to "
    "the lower temperature; the same iteration always picks the same temperature. The acquire manifest records "
    "the choice (metric temperature, probe cost temperature_probe_seconds) and temperature.json the probe table."
)


class Sampling(Settings):
    temperature: TemperatureOrAuto = Field(
        default=1.0,
        description=f"Sampling temperature from 0 to {MAX_TEMPERATURE:g} (0 is greedy), or {AUTO}. "
        + TEMPERATURE_OBJECTIVE
        + " Default: 1.0.",
    )
    auto_temperature: AutoTemperature = Field(
        default_factory=AutoTemperature,
        description="The search of temperature: auto (ignored for a fixed temperature). Default: 4 temperatures "
        "from 0.3 to 1.2 on 32 prompts.",
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass. Default: 1.0.")
    max_new_tokens: MaxNewTokens = Field(
        default=DEFAULT_MAX_NEW_TOKENS, description=f"Tokens generated per sample. Default: {DEFAULT_MAX_NEW_TOKENS}."
    )


SCORER_TYPES = tuple(SCORERS)
"""The built-in scorers (`sil_stages.core.scorers`; the stage's `sil_stages.select.scorers.REGISTRY` builds them)."""
SCORER_TYPE_PATTERN = "^(" + "|".join(SCORER_TYPES) + "|" + PYTHON_OBJECT + ")$"
ScorerType = Annotated[
    str,
    Matching(
        SCORER_TYPE_PATTERN,
        "one of " + ", ".join(SCORER_TYPES) + ", or a Python class as module:Class (e.g. my_scorers:LengthScorer)",
    ),
]

_Template = TypeVar("_Template", str, str | None)


@dataclass(frozen=True)
class Placeholders:
    """A template's required placeholders: checked by pydantic here, and by the API server through `cel_rule`,
    both from this one tuple."""

    names: tuple[str, ...]

    def check(self, value: _Template) -> _Template:
        if value is not None:
            missing = [p for p in self.names if p not in value]
            if missing:
                raise ValueError(f"the template lacks the placeholder(s) {', '.join(missing)}")
        return value

    def cel_rule(self, path: str) -> str:
        """The CEL condition that the template at `path` (e.g. `self.judge.template`) holds every placeholder."""
        return "(" + " && ".join(f"{path}.contains('{p}')" for p in self.names) + ")"

    @property
    def listed(self) -> str:
        return " and ".join(self.names)


JUDGE_PLACEHOLDERS = ("{prompt}", "{completion}")
SELF_REWARDING_TEMPLATE = """Review the user's question and the corresponding response using the additive 5-point \
scoring system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's inquiry, even if \
it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not \
completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way, \
regardless of whether it seems to have been written by an AI Assistant or if it has elements typically found in \
blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing the \
user's question directly and comprehensively, and is well-organized and helpful, even if there is slight room for \
improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an AI Assistant, \
without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and \
insightful answer.

User: {prompt}
<response>{completion}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To evaluate \
the response in alignment with this additive scoring model, we'll systematically attribute points based on the \
outlined criteria.
"""
"""The LLM-as-a-judge prompt of Self-Rewarding Language Models (Yuan et al. 2024, figure 2), with the question and
the response as `{prompt}` and `{completion}`."""


JUDGE_REQUIRES = Placeholders(JUDGE_PLACEHOLDERS)
JudgeTemplate = Annotated[str | None, AfterValidator(JUDGE_REQUIRES.check)]


class Judge(Settings):
    """How `llm-judge` asks its model for a score and reads the answer (Self-Rewarding LMs' LLM-as-a-judge)."""

    template: JudgeTemplate = Field(
        default=None,
        description="The judge prompt; {prompt} and {completion} are replaced by the question and the answer "
        "judged (both required). Default: the additive 5-point prompt of Self-Rewarding Language Models.",
    )
    score_pattern: AnswerPattern = Field(
        default=r"Score:\s*([0-9]+(?:\.[0-9]+)?)",
        description="Regular expression whose first group (else whole match) is the score in the judgment; a "
        "judgment it does not match is no score (counted in judge_parse_rate). Default: Score: <number>.",
    )
    max_new_tokens: int = Field(default=128, ge=1, le=32768, description="Tokens per judgment. Default: 128.")
    temperature: float = Field(
        default=0.0, ge=0.0, le=5.0, description="Judge sampling temperature; 0 is greedy. Default: 0."
    )
    samples: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Judgments per answer; the score is the mean of the parseable ones (Self-Rewarding samples 3 "
        "at temperature > 0). Default: 1.",
    )
    min_parse_rate: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The stage fails when a smaller share of the answers gets a parseable score (a broken template "
        "or judge must not silently empty the dataset). Default: 0.5.",
    )


SandboxProtection = Literal["seccomp", "landlock"]
"""The code-tests sandbox's required protections (sil_stages.select.code_sandbox.pool.REQUIRED_PROTECTIONS)."""


class CodeTests(Settings):
    """How `code-tests` runs each completion against its prompt's tests: one sandboxed process per completion."""

    timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=600.0,
        description="Wall-clock seconds for one completion's run (its code and all its tests); the whole process "
        "group is killed then and the tests not yet reported fail. CPU time is limited to this plus one second. "
        "Default: 5.",
    )
    memory_mb: int = Field(
        default=512,
        ge=64,
        le=65536,
        description="Address space of each process of a run (RLIMIT_AS), MiB. Default: 512.",
    )
    max_processes: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Processes and threads a run may have (RLIMIT_NPROC; beyond the stage's own tasks when the "
        "stage is not root). Default: 16.",
    )
    max_file_mb: int = Field(
        default=16,
        ge=0,
        le=65536,
        description="Largest file a run may write in its work dir (RLIMIT_FSIZE), MiB. Default: 16.",
    )
    max_output_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=1 << 30,
        description="Most bytes of test values a run may send back; more fails the whole run (what it prints goes "
        "to /dev/null and means nothing). Default: 1 MiB.",
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Sandbox workers running completions in parallel. Default: the CPUs the stage may use.",
    )
    accept_missing_protections: list[SandboxProtection] = Field(
        default=[],  # a default (not a factory), so the CRD carries it and the API server fills it in
        description="Protections the sandbox may run without where the machine lacks them (the weaker isolation is "
        "then accepted): seccomp (no sockets, no signals to others, no new session or namespace) and landlock (no "
        "file outside the run's work dir). Default: none; a missing one makes the stage refuse, saying which and "
        "why.",
    )


class Scorer(Settings):
    type: ScorerType = Field(
        default="verifier",
        description=" ".join(f"{scorer.name}: {scorer.summary}." for scorer in SCORERS.values())
        + " module:Class: a user scorer class. Default: verifier.",
    )
    verifier: Verifier = Field(
        default="exact-match",
        description="For type verifier: exact-match (the extracted answer equals the prompt record's `answer` "
        "after normalization), math (the completion's final answer, boxed or last, equals the record's `answer` "
        "symbolically: 1/2 = 0.5 = \\frac{1}{2}; answerPattern is not used) or a Python function "
        "`module:function(prompt, completion, record) -> float` "
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
    model: ModelUri | None = Field(
        default=None,
        description="For reward-model (required): the reward model, a one-label AutoModelForSequenceClassification "
        "checkpoint. For llm-judge: the judge model. Any model URI the loop accepts. Default: none (llm-judge: "
        "the iteration's champion).",
    )
    batch_size: int = Field(
        default=64,
        ge=1,
        description="Completions per forward pass (reward-model) or judgments per generation "
        "batch (llm-judge). Default: 64.",
    )
    judge: Judge = Field(default_factory=Judge, description="For llm-judge: the judge prompt and its parsing.")
    code_tests: CodeTests = Field(
        default_factory=CodeTests, description="For code-tests: the sandbox's limits and its required protections."
    )


_ALL_PASS_RATES = (0.0, 1.0)
"""The difficulty band's default bounds: every prompt."""


class Difficulty(Settings):
    """Online difficulty filtering (DAPO's dynamic sampling, curriculum by pass rate): a prompt's pass rate is the
    share of its samples scoring at least keep.minScore; prompts outside [minPassRate, maxPassRate] are dropped."""

    min_pass_rate: float = Field(
        default=_ALL_PASS_RATES[0],
        ge=0.0,
        le=1.0,
        description="Drop prompts whose pass rate is below this. Default: 0.",
    )
    max_pass_rate: float = Field(
        default=_ALL_PASS_RATES[1],
        ge=0.0,
        le=1.0,
        description="Drop prompts whose pass rate is above this. Default: 1.",
    )
    cross_field: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            # has(): the API server also checks the rule against the CRD's `default: {}` (nested defaults unapplied).
            cel=f"(has(self.minPassRate) ? self.minPassRate : {_ALL_PASS_RATES[0]}) <= "
            f"(has(self.maxPassRate) ? self.maxPassRate : {_ALL_PASS_RATES[1]})",
            message="minPassRate must not be above maxPassRate",
            check=lambda band: band.min_pass_rate <= band.max_pass_rate,
        ),
    )

    exclusive: bool = Field(
        default=False,
        description="true: the bounds themselves are outside the band (minPassRate 0, maxPassRate 1, exclusive "
        "keeps exactly the prompts with some right and some wrong samples, DAPO's rule). Default: false.",
    )


class Dedupe(Settings):
    """Removal of repeated training examples (exact, or near-duplicates by MinHash LSH over character n-grams)."""

    method: Literal["none", "exact", "minhash"] = Field(
        default="exact",
        description="none: keep repeats. exact: drop an example identical to one kept before. minhash: drop an "
        "example whose estimated Jaccard similarity (datasketch MinHash LSH) to a kept one is at least threshold. "
        "Default: exact.",
    )
    threshold: float = Field(
        default=0.85,
        gt=0.0,
        le=1.0,
        description="For minhash: the Jaccard similarity that makes two examples duplicates. Default: 0.85.",
    )
    ngram: int = Field(default=5, ge=1, le=64, description="For minhash: character n-gram size. Default: 5.")
    num_perm: int = Field(
        default=128, ge=16, le=1024, description="For minhash: permutations per signature. Default: 128."
    )
    across_iterations: bool = Field(
        default=False,
        description="true: also drop examples that duplicate data kept in earlier iterations of this loop. "
        "Default: false (within this iteration).",
    )


class Keep(Settings):
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE, description=f"Keep completions scoring at least this. Default: {DEFAULT_MIN_SCORE}."
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many completions per prompt, the highest-scored (best-of-n). Default: no limit.",
    )
    difficulty: Difficulty = Field(
        default_factory=Difficulty, description="Keep only prompts whose pass rate is in a band. Default: all."
    )
    dedupe: Dedupe = Field(default_factory=Dedupe, description="Repeated-example removal. Default: exact.")


class Accumulate(Settings):
    """Training on the data kept in every iteration so far instead of this one's only: accumulating real and
    synthetic data avoids the model collapse that replacing it causes (Gerstgrasser et al. 2024)."""

    enabled: bool = Field(default=False, description="Default: false (train on this iteration's data).")
    max_examples: int | None = Field(
        default=None,
        ge=1,
        description="Cap on the examples trained on; the oldest iterations' are dropped first. Default: no cap.",
    )


class CheckpointSelection(Settings):
    """Best checkpoint of a training run: the model in training is scored every N steps (or each epoch) on a
    validation set of its own, by the loop's scorer, and the candidate is the best-scored one, not the last
    (sil_stages.optimize.checkpoint_selection)."""

    validation_uri: DataUri = Field(
        description="JSONL of validation prompts (`prompt`, and what the scorer reads, e.g. `answer`): s3://, "
        "file:// or a path relative to the loop file. It must not be an evaluation dataset "
        "(evaluate.datasets[].uri): the candidate would be chosen on the data that judges it. Required.",
    )
    every_steps: int | None = Field(
        default=None,
        ge=1,
        description="Score every N optimizer steps (and at the last step). Default: at the end of each epoch.",
    )
    limit: int | None = Field(
        default=None, ge=1, le=100000, description="Score only the first `limit` prompts. Default: all."
    )
    max_new_tokens: MaxNewTokens = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        description=f"Tokens generated per greedy answer. Default: {DEFAULT_MAX_NEW_TOKENS}.",
    )


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
    seed: int | None = Field(
        default=None,
        ge=0,
        description="Deprecated: spec.seed replaces it (and seeds every stage, as this field always did). Still "
        "read when spec.seed is not set.",
    )
    bf16: bool | None = Field(
        default=None, description="bf16 training. Default: on when the GPU supports it, off on CPU."
    )

    @model_validator(mode="before")
    @classmethod
    def _deepspeed_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "deepspeed" in data:
            raise PydanticCustomError(
                "moved_field",
                "hyperparameters.deepspeed moved to optimize.distributed.deepspeed (zero2, zero3, zero3-offload or a "
                "DeepSpeed JSON object); move it there",
            )
        return data


HarnessTaskName = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Matching(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "an lm-evaluation-harness task name: letters, digits, '_', '.', '-'"),
]


class Harness(Settings):
    """Standard benchmarks as regression guards: lm-evaluation-harness tasks defined by the task YAMLs of one
    folder, run on candidate and champion (sil_stages.evaluate.harness). Each task becomes a dataset of its own in
    the series (`dataset=<task>`), with the paired difference, interval and p-value of its per-sample scores."""

    tasks: list[HarnessTaskName] = Field(
        min_length=1,
        max_length=32,
        description="Task names, each defined by a YAML in includePath (lm-eval's built-in tasks are not "
        "searched: they download their data). Each task's metric must be a per-sample mean "
        "(aggregation: mean, higher_is_better: true), e.g. acc or exact_match; corpus-level metrics (bleu, "
        "perplexity, ...) cannot be paired per sample and are refused. Required.",
    )
    include_path: DataUri = Field(
        description="The folder of task YAMLs and their data files (dataset_path: json with "
        "dataset_kwargs.data_files relative to this folder): file:///path (in the image or a mounted volume), "
        "s3://bucket/prefix (downloaded by the stage), or a path relative to the loop file for `sil run`. Required.",
    )
    num_fewshot: int | None = Field(
        default=None, ge=0, le=64, description="Few-shot examples per prompt. Default: each task's own setting."
    )
    limit: int | None = Field(
        default=None, ge=1, description="Score only the first `limit` items of each task. Default: all items."
    )
    batch_size: int | None = Field(default=None, ge=1, description="lm-eval's batch size. Default: evaluate.batchSize.")
    metric: str | None = Field(
        default=None,
        min_length=1,
        description="The metric compared, by name, in every task. Default: each task's first metric.",
    )


class EvalDataset(Settings):
    cross_field: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            cel="has(self.uri) != has(self.harness)",
            message="a dataset sets exactly one of uri (a JSONL of prompt and answer) and harness "
            "(lm-evaluation-harness tasks)",
            check=lambda dataset: (dataset.uri is None) != (dataset.harness is None),
        ),
    )

    name: DnsLabel = Field(
        description="Dataset name, a DNS label; it becomes the `dataset` metric label (for a harness entry, each "
        "task's name is the label instead)."
    )
    uri: DataUri | None = Field(
        default=None,
        description="JSONL with `prompt` and `answer` fields: s3://bucket/key, file:///path, or a path relative to "
        "the loop file for `sil run`. Exactly one of uri and harness.",
    )
    harness: Harness | None = Field(
        default=None,
        description="lm-evaluation-harness tasks run on both models, as regression guards. Exactly one of uri and "
        "harness; not the first dataset (the primary score is a JSONL dataset's).",
    )


SELF_REFINE_PLACEHOLDERS = ("{prompt}", "{answer}")
SELF_REFINE_TEMPLATE = """Question:
{prompt}

Proposed answer:
{answer}

Check the proposed answer step by step. If it is correct, give it again; if it is wrong, give the corrected \
answer. Answer in the same form as the proposed answer, with nothing else.

{prompt}"""
"""The default critique-and-revise prompt of self-refine (Madaan et al. 2023, with feedback and revision in one
prompt): the question and the previous answer as `{prompt}` and `{answer}`. It ends with the question itself, so
the revised answer continues the prompt exactly as the first answer did and the answer pattern reads it the same
way (also for a base model, or a character-level one that knows little more than digits)."""


SELF_REFINE_REQUIRES = Placeholders(SELF_REFINE_PLACEHOLDERS)
SelfRefineTemplate = Annotated[str | None, AfterValidator(SELF_REFINE_REQUIRES.check)]


class SelfRefine(Settings):
    """Self-refine at evaluation (Madaan et al. 2023): the model revises its own greedy answer, round by round."""

    rounds: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Critique-and-revise rounds after the greedy answer, each greedy; the accuracy after round r "
        "is selfimprove_eval_self_refine_score{round=r}. Default: 0 (off).",
    )
    template: SelfRefineTemplate = Field(
        default=None,
        description="The revision prompt; {prompt} and {answer} are replaced by the question and the previous "
        "answer (both required). Default: a prompt asking to check the answer and give it again or corrected, "
        "ending with the question so the revision has the first answer's form.",
    )


class Refinement(Settings):
    """Inference-time refinement measured at evaluation, what the trained model is compared against: sampling
    more (self-consistency, pass@k, best-of-N) and revising (self-refine). The sampled metrics share one set of
    `samples` samples per prompt."""

    method: Literal["none", "self-consistency"] = Field(
        default="self-consistency",
        description="Inference refinement measured at evaluation: self-consistency@k (majority answer of "
        "`samples` samples). Default: self-consistency.",
    )
    samples: int = Field(
        default=8, ge=1, le=256, description="k for self-consistency@k; n for pass@k and best-of-N. Default: 8."
    )
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="Sampling temperature. Default: 0.7.")
    pass_at_k: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(
        default=None,
        max_length=16,
        description="The k of pass@k (unbiased estimator of Chen et al. 2021 on the `samples` samples, correct by "
        "the held-out verifier), each at most samples: selfimprove_eval_pass_at_k{k}. [] turns it off. Default: "
        "[1, samples] whenever samples are drawn.",
    )
    best_of_n: bool = Field(
        default=False,
        description="true: the select scorer scores the `samples` samples of each prompt and the top-scored one "
        "(the first on ties) is the answer: selfimprove_eval_best_of_n_score. When the select scorer is the "
        "held-out verifier itself, best-of-N is an oracle and equals pass@samples. Default: false.",
    )
    self_refine: SelfRefine = Field(
        default_factory=SelfRefine, description="Self-refine rounds on the greedy answer. Default: off."
    )


SELF_INSTRUCT_PLACEHOLDER = "{examples}"
DEFAULT_SELF_INSTRUCT_TEMPLATE = "{examples}\n"
"""The example prompts one per line, then a new line: the model continues the list with a prompt of its own."""


SELF_INSTRUCT_REQUIRES = Placeholders((SELF_INSTRUCT_PLACEHOLDER,))
SelfInstructTemplate = Annotated[str, AfterValidator(SELF_INSTRUCT_REQUIRES.check)]


class Novelty(Settings):
    """When a generated prompt counts as new: not a near-duplicate (MinHash LSH over character n-grams, as
    select's dedupe) of a pool prompt, of another generated prompt, or of an earlier iteration's generated one."""

    threshold: float = Field(
        default=0.7,
        gt=0.0,
        le=1.0,
        description="Estimated Jaccard similarity at or above which a generated prompt is a duplicate. Default: 0.7.",
    )
    ngram: int = Field(default=5, ge=1, le=64, description="Character n-gram size. Default: 5.")


class SelfInstruct(Settings):
    """Self-Instruct (Wang et al. 2023): the champion writes new prompts from examples of the pool (prompts.uri)."""

    count: int = Field(ge=1, le=100000, description="Prompts to generate per iteration. Required.")
    examples: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Pool prompts shown per generated prompt (a seeded draw, different for each). Default: 3.",
    )
    template: SelfInstructTemplate = Field(
        default=DEFAULT_SELF_INSTRUCT_TEMPLATE,
        description="The prompt the champion continues; {examples} (required) is replaced by the drawn pool "
        "prompts, one per line. The text generated up to its first newline, stripped, is the new prompt. "
        "Default: the examples one per line, then a newline (the model continues the list).",
    )
    temperature: float = Field(default=1.0, ge=0.0, le=5.0, description="Sampling temperature. Default: 1.0.")
    max_new_tokens: MaxNewTokens = Field(
        default=64, description="Tokens generated per new prompt at most. Default: 64."
    )
    novelty: Novelty = Field(
        default_factory=Novelty,
        description="Generated prompts that are empty, or duplicates or near-duplicates of the pool, of each other "
        "or of earlier iterations' generated prompts, are dropped.",
    )


ChatTemplateMode = Literal["auto", "always", "never"]
"""When a prompt goes through the model's chat template: auto (when its tokenizer has one), always, never."""


class ChatFormat(Settings):
    """How every stage turns a prompt into what the model reads (sil_stages.core.chat): spec.model's chat settings,
    given to every stage as they are, so acquire, select's judge, optimize and evaluate format prompts alike."""

    chat_template: ChatTemplateMode = Field(
        default="auto",
        description="Whether prompts go through the model's chat template (as user turns, the completion being the "
        "assistant turn's content). auto: when the tokenizer has a chat_template. always: it must have one (the "
        "stages fail when it has none). never: prompts are fed as raw text (records with `messages` are refused). "
        "A conversational loop trains on conversational datasets (SFT's loss on the assistant turn only). "
        "Default: auto.",
    )
    system_prompt: str | None = Field(
        default=None,
        min_length=1,
        description="A system turn put before every conversation that has none (chat template only). Default: none.",
    )


class Generation(Settings):
    """How the champion samples completions: spec.acquire's settings, given to the acquire stage as they are."""

    samples_per_prompt: int = Field(default=4, ge=1, le=256, description="Completions per prompt. Default: 4.")
    sampling: Sampling = Field(default_factory=Sampling, description="Sampling parameters.")
    engine: EngineName = Field(
        default="transformers",
        description="Generation engine: transformers (CPU or GPU) or vllm (GPU, needs the [gpu] extra). "
        "Default: transformers.",
    )
    batch_size: int = Field(default=64, ge=1, description="Prompts per generation batch. Default: 64.")


class Significance(Settings):
    """How candidate and champion are compared on the same prompts (sil_stages.evaluate.significance)."""

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
    """Overlap between this iteration's selected training data and the evaluation datasets
    (sil_stages.evaluate.guards)."""

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
        description="How an answer is judged correct: exact-match against the dataset's `answer`, math "
        "(symbolic equality of the final answer with `answer`), or a function module:function. Default: "
        "exact-match.",
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
    temperature: RolloutTemperature = Field(
        default=1.0,
        description="Sampling temperature of the rollouts, or auto: the temperature acquire sampled with this "
        "iteration (the one its probe chose when acquire.sampling.temperature is auto, else acquire's fixed one; "
        "read from the acquire manifest's temperature metric). Default: 1.0.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Advantage scaling: group (divide by the group's reward std), batch, or none (Dr. GRPO). "
        "Default: group.",
    )


DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3-offload")
"""The DeepSpeed configurations `distributed.deepspeed` names (TRL's examples/accelerate_configs)."""


def _json_object(value: str) -> str:
    if value in DEEPSPEED_PRESETS:
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise PydanticCustomError(
            "deepspeed_json", "not valid JSON ({msg} at column {column})", {"msg": error.msg, "column": error.colno}
        ) from error
    if not isinstance(parsed, dict):
        raise PydanticCustomError("deepspeed_json", "expected a JSON object")
    return value


DeepSpeedConfig = Annotated[
    str,
    Matching(
        r"^(zero2|zero3|zero3-offload|[{][\s\S]*[}])$",
        "zero2, zero3, zero3-offload or a DeepSpeed JSON object",
    ),
    AfterValidator(_json_object),
]


class Distributed(Settings):
    """Training with more than one process (data parallel, optionally DeepSpeed ZeRO), with `accelerate launch`.

    The optimize stage re-executes itself under `accelerate launch` when it asks for more than one process in all
    (or for DeepSpeed); every rank trains, global rank 0 saves and uploads the checkpoint and writes the manifest.
    """

    processes_per_node: int | None = Field(
        default=None,
        ge=1,
        description="Training processes on each node (one per GPU). Default: one per GPU the optimize stage sees "
        "(torch.cuda.device_count()), 1 on CPU.",
    )
    nodes: int = Field(
        default=1,
        ge=1,
        description="Nodes (pods) training together; more than 1 needs the operator's multi-node engine, which "
        "sets SIL_NODE_RANK, SIL_MASTER_ADDR and SIL_MASTER_PORT for the stage. Default: 1.",
    )
    deepspeed: DeepSpeedConfig | None = Field(
        default=None,
        description="DeepSpeed ZeRO: zero2, zero3 (parameters sharded; the checkpoint is gathered into one 16-bit "
        "model), zero3-offload (zero3 with optimizer and parameters in CPU memory), or a DeepSpeed config as a "
        "JSON object. GPU only: on CPU the stage fails. Default: none (plain data parallel).",
    )

"""One table of invalid loops, run against `sil validate` (tests/unit/operator/test_spec.py) and against the real
API server with the generated CRD (tests/integration/test_crd_validation.py).

Each row breaks one rule of `valid_loop()` and names the field the error must name. Both checkers must reject every
row naming that field, so the two can never drift apart again. A row the API server cannot check says so in
`sil_validate_only`, with the reason; the integration test then checks that the API server really accepts it (the
operator's parse_loop still marks such a loop Failed with reason InvalidSpec).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

DELETE = object()
"""A value that removes the field instead of setting it."""

GATE: dict[str, Any] = {"name": "improves", "query": "selfimprove_eval_score", "successCondition": "result > champion"}


def valid_loop(name: str = "rejected", namespace: str = "default") -> dict[str, Any]:
    """A valid loop with every section a row needs to break."""
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "file:///models/base"},
            "storage": {"uri": f"file:///var/lib/selfimprove/runs/{name}"},
            "maxIterations": 2,
            "runtime": {"backoffLimit": 1},
            "acquire": {"prompts": {"uri": "file:///data/prompts.jsonl"}, "samplesPerPrompt": 4},
            "select": {"scorer": {"verifier": "exact-match"}},
            "evaluate": {"datasets": [{"name": "heldout", "uri": "file:///data/heldout.jsonl"}]},
            "promotion": {"gates": [dict(GATE)]},
        },
    }


def patched(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with each dotted path set to its value (DELETE removes it); numbers index lists."""
    result = copy.deepcopy(document)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return result


@dataclass(frozen=True)
class Invalid:
    id: str
    changes: dict[str, Any]
    field: str
    """The field the error names, dotted, list indexes as numbers (sil validate's form)."""
    says: str = ""
    """A fragment both answers contain: the message of a CEL rule, which is the same text on both sides."""
    sil_validate_only: str = ""
    """Why the API server cannot check this row; empty when it can."""

    def api_server_field(self) -> str:
        """The field as the API server writes it: spec.evaluate.datasets[0].name."""
        return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", self.field)


def _dataset(name: str, uri: str = "file:///data/heldout.jsonl") -> dict[str, str]:
    return {"name": name, "uri": uri}


MAJORITY = "select.scorer.type majority-vote needs acquire.samplesPerPrompt >= 2"
NO_CONDITION = "a gate needs successCondition, failureCondition or both"
REGEX = "the API server cannot compile a regular expression given as a value"
CEL = "the API server cannot compile a CEL expression given as a value"
DPO_BLOCK = "optimize.dpo holds the settings of method dpo"
GRPO_BLOCK = "optimize.grpo holds the settings of method grpo"
GRPO_GROUPS = "must be divisible by grpo.numGenerations"
PASS_AT_K = "every k must be at most evaluate.refinement.samples"
NO_PROMPTS = "acquire.prompts needs uri (a JSONL file of prompts) or generator"
TWO_SOURCES = "acquire.prompts.generator and acquire.prompts.uri exclude each other"
NO_POOL = "acquire.prompts.selfInstruct needs acquire.prompts.uri"
NUMBER_OR_AUTO = (
    "a number-or-auto field is untyped in a structural schema; its bounds and pattern check numbers and strings only"
)
ONE_DATASET_KIND = "a dataset sets exactly one of uri"
HARNESS_FIRST = "evaluate.datasets[0] must be a JSONL dataset (uri)"
HARNESS: dict[str, Any] = {"tasks": ["tiny-arith"], "includePath": "file:///data/harness-tasks"}
SCRATCH = "runtime.scratch needs exactly one of size (an emptyDir) and claimName (a PersistentVolumeClaim)"

INVALID: list[Invalid] = [
    # bounds and types
    Invalid("maxIterations 0", {"spec.maxIterations": 0}, "spec.maxIterations"),
    Invalid("maxIterations above 1000", {"spec.maxIterations": 1001}, "spec.maxIterations"),
    Invalid("a string for an integer", {"spec.maxIterations": "three"}, "spec.maxIterations"),
    Invalid("negative samplesPerPrompt", {"spec.acquire.samplesPerPrompt": -1}, "spec.acquire.samplesPerPrompt"),
    Invalid("perIteration 0", {"spec.acquire.prompts.perIteration": 0}, "spec.acquire.prompts.perIteration"),
    Invalid(
        "selfInstruct without a count",
        {"spec.acquire.prompts.selfInstruct": {}},
        "spec.acquire.prompts.selfInstruct.count",
    ),
    Invalid(
        "selfInstruct novelty threshold 0",
        {"spec.acquire.prompts.selfInstruct": {"count": 8, "novelty": {"threshold": 0}}},
        "spec.acquire.prompts.selfInstruct.novelty.threshold",
    ),
    Invalid("topP above 1", {"spec.acquire.sampling": {"topP": 1.5}}, "spec.acquire.sampling.topP"),
    Invalid(
        "a temperature word other than auto",
        {"spec.acquire.sampling": {"temperature": "hot"}},
        "spec.acquire.sampling.temperature",
    ),
    Invalid("temperature above 5", {"spec.acquire.sampling": {"temperature": 6}}, "spec.acquire.sampling.temperature"),
    Invalid(
        "a temperature that is a list",
        {"spec.acquire.sampling": {"temperature": [0.5]}},
        "spec.acquire.sampling.temperature",
        sil_validate_only=NUMBER_OR_AUTO,
    ),
    Invalid(
        "autoTemperature min above max",
        {"spec.acquire.sampling": {"temperature": "auto", "autoTemperature": {"min": 1.0, "max": 0.5}}},
        "spec.acquire.sampling.autoTemperature",
        "autoTemperature.min must not be above autoTemperature.max",
    ),
    Invalid(
        "grpo temperature a word other than auto",
        {"spec.optimize": {"method": "grpo", "grpo": {"temperature": "warm"}}},
        "spec.optimize.grpo.temperature",
    ),
    Invalid(
        "negative learning rate",
        {"spec.optimize": {"hyperparameters": {"learningRate": -1}}},
        "spec.optimize.hyperparameters.learningRate",
    ),
    Invalid("backoffLimit above 20", {"spec.runtime.backoffLimit": 21}, "spec.runtime.backoffLimit"),
    Invalid("shmSize not a quantity", {"spec.runtime.shmSize": "lots"}, "spec.runtime.shmSize"),
    Invalid("scratch with neither size nor claim", {"spec.runtime.scratch": {}}, "spec.runtime.scratch", SCRATCH),
    Invalid(
        "a stage's scratch with both size and claim",
        {"spec.runtime.stages": {"optimize": {"scratch": {"size": "100Gi", "claimName": "cache"}}}},
        "spec.runtime.stages.optimize.scratch",
        SCRATCH,
    ),
    Invalid("scratch size not a quantity", {"spec.runtime.scratch": {"size": "big"}}, "spec.runtime.scratch.size"),
    Invalid("patience 0", {"spec.stopping": {"patience": 0}}, "spec.stopping.patience"),
    Invalid("a gate count of 0", {"spec.promotion.gates.0.count": 0}, "spec.promotion.gates.0.count"),
    Invalid(
        "contamination maxOverlap above 1",
        {"spec.evaluate.contamination": {"maxOverlap": 1.5}},
        "spec.evaluate.contamination.maxOverlap",
    ),
    Invalid(
        "contamination ngram 0", {"spec.evaluate.contamination": {"ngram": 0}}, "spec.evaluate.contamination.ngram"
    ),
    Invalid(
        "significance confidence of 1",
        {"spec.evaluate.significance": {"confidence": 1.0}},
        "spec.evaluate.significance.confidence",
    ),
    Invalid(
        "too few bootstrap resamples",
        {"spec.evaluate.significance": {"resamples": 10}},
        "spec.evaluate.significance.resamples",
    ),
    # enums
    Invalid("unknown engine", {"spec.acquire.engine": "llama.cpp"}, "spec.acquire.engine"),
    Invalid("unknown scorer type", {"spec.select.scorer.type": "bandit"}, "spec.select.scorer.type"),
    Invalid(
        "a reward-model scorer without a model",
        {"spec.select.scorer.type": "reward-model"},
        "spec.select.scorer.model",
        says="needs select.scorer.model",
    ),
    Invalid(
        "a judge template without the {completion} placeholder",
        {"spec.select.scorer": {"type": "llm-judge", "judge": {"template": "Rate {prompt}. Score:"}}},
        "spec.select.scorer.judge.template",
    ),
    Invalid(
        "a code-tests protection the sandbox does not know",
        {"spec.select.scorer": {"type": "code-tests", "codeTests": {"acceptMissingProtections": ["network"]}}},
        "spec.select.scorer.codeTests.acceptMissingProtections.0",
    ),
    Invalid(
        "a code-tests run without time",
        {"spec.select.scorer": {"type": "code-tests", "codeTests": {"timeoutS": 0}}},
        "spec.select.scorer.codeTests.timeoutS",
    ),
    Invalid(
        "a difficulty band whose minimum is above its maximum",
        {"spec.select.keep": {"difficulty": {"minPassRate": 0.8, "maxPassRate": 0.2}}},
        "spec.select.keep.difficulty",
        says="minPassRate must not be above maxPassRate",
    ),
    Invalid(
        "an unknown dedupe method",
        {"spec.select.keep": {"dedupe": {"method": "simhash"}}},
        "spec.select.keep.dedupe.method",
    ),
    Invalid("unknown optimize method", {"spec.optimize": {"method": "ppo"}}, "spec.optimize.method"),
    Invalid(
        "unknown grpo loss type",
        {"spec.optimize": {"method": "grpo", "grpo": {"lossType": "ppo"}}},
        "spec.optimize.grpo.lossType",
    ),
    Invalid(
        "unknown dpo reference",
        {"spec.optimize": {"method": "dpo", "dpo": {"reference": "sft"}}},
        "spec.optimize.dpo.reference",
    ),
    Invalid(
        "unknown lr scheduler",
        {"spec.optimize": {"hyperparameters": {"lrScheduler": "warmup"}}},
        "spec.optimize.hyperparameters.lrScheduler",
    ),
    # method settings: bounds
    Invalid("dpo beta 0", {"spec.optimize": {"method": "dpo", "dpo": {"beta": 0}}}, "spec.optimize.dpo.beta"),
    Invalid(
        "an empty dpo loss type list",
        {"spec.optimize": {"method": "dpo", "dpo": {"lossType": []}}},
        "spec.optimize.dpo.lossType",
    ),
    Invalid(
        "grpo with one generation per prompt",
        {"spec.optimize": {"method": "grpo", "grpo": {"numGenerations": 1}}},
        "spec.optimize.grpo.numGenerations",
    ),
    Invalid("lora rank 0", {"spec.optimize": {"lora": {"r": 0}}}, "spec.optimize.lora.r"),
    Invalid(
        "lora without target modules",
        {"spec.optimize": {"lora": {"targetModules": []}}},
        "spec.optimize.lora.targetModules",
    ),
    Invalid(
        "no training processes",
        {"spec.optimize": {"distributed": {"processesPerNode": 0}}},
        "spec.optimize.distributed.processesPerNode",
    ),
    Invalid("no nodes", {"spec.optimize": {"distributed": {"nodes": 0}}}, "spec.optimize.distributed.nodes"),
    Invalid(
        "an unknown deepspeed preset",
        {"spec.optimize": {"distributed": {"deepspeed": "zero4"}}},
        "spec.optimize.distributed.deepspeed",
    ),
    Invalid(
        "a deepspeed config that is not JSON",
        {"spec.optimize": {"distributed": {"deepspeed": "{stage: 3}"}}},
        "spec.optimize.distributed.deepspeed",
        sil_validate_only="the API server's schema only sees braces; it cannot parse the JSON inside",
    ),
    Invalid(
        "a checkpoint interval of 0 steps",
        {"spec.optimize": {"checkpointEverySteps": 0}},
        "spec.optimize.checkpointEverySteps",
    ),
    Invalid("a negative pair margin", {"spec.select.pairs": {"minMargin": -1}}, "spec.select.pairs.minMargin"),
    # unknown and missing fields
    Invalid("an unknown field", {"spec.maxIteration": 3}, "spec.maxIteration"),
    Invalid("an unknown nested field", {"spec.runtime.backoffLimits": 1}, "spec.runtime.backoffLimits"),
    Invalid("an unknown stage override", {"spec.runtime.stages": {"train": {}}}, "spec.runtime.stages.train"),
    Invalid("missing acquire", {"spec.acquire": DELETE}, "spec.acquire"),
    Invalid("missing model uri", {"spec.model": {}}, "spec.model.uri"),
    # patterns: verifiers, DNS labels
    Invalid(
        "a select verifier that is neither built in nor module:function",
        {"spec.select.scorer.verifier": "v.py"},
        "spec.select.scorer.verifier",
    ),
    Invalid(
        "an evaluate verifier that is neither built in nor module:function",
        {"spec.evaluate.verifier": "v.py"},
        "spec.evaluate.verifier",
    ),
    Invalid(
        "a dataset name that is not a DNS label",
        {"spec.evaluate.datasets": [_dataset("Held_Out")]},
        "spec.evaluate.datasets.0.name",
    ),
    Invalid(
        "a dataset name longer than 63",
        {"spec.evaluate.datasets": [_dataset("d" * 64)]},
        "spec.evaluate.datasets.0.name",
    ),
    Invalid(
        "a gate name with a trailing newline",
        {"spec.promotion.gates.0.name": "improves\n"},
        "spec.promotion.gates.0.name",
    ),
    Invalid(
        "a gate name that is not a DNS label",
        {"spec.promotion.gates.0.name": "Improves!"},
        "spec.promotion.gates.0.name",
    ),
    Invalid(
        "a gate query with an unknown placeholder",
        {"spec.promotion.gates.0.query": 'x{l="{{loops}}"}'},
        "spec.promotion.gates.0.query",
        says="placeholders are among {{loop}}, {{namespace}}",
    ),
    # URI schemes
    Invalid("a model uri with an unknown scheme", {"spec.model.uri": "ftp://host/base"}, "spec.model.uri"),
    Invalid("an empty model uri", {"spec.model.uri": ""}, "spec.model.uri"),
    Invalid("an unknown chat template mode", {"spec.model.chatTemplate": "sometimes"}, "spec.model.chatTemplate"),
    Invalid("an empty system prompt", {"spec.model.systemPrompt": ""}, "spec.model.systemPrompt"),
    Invalid("a storage uri with an unknown scheme", {"spec.storage.uri": "ftp://host/runs"}, "spec.storage.uri"),
    Invalid("a storage uri on the hub (models only)", {"spec.storage.uri": "hf://org/runs"}, "spec.storage.uri"),
    Invalid(
        "a prompts generator that is not module:function",
        {"spec.acquire.prompts": {"generator": "problems.py"}},
        "spec.acquire.prompts.generator",
    ),
    Invalid(
        "a prompts uri with an unknown scheme",
        {"spec.acquire.prompts.uri": "http://host/p.jsonl"},
        "spec.acquire.prompts.uri",
    ),
    Invalid(
        "a dataset uri with an unknown scheme",
        {"spec.evaluate.datasets": [_dataset("heldout", "gs://b/h")]},
        "spec.evaluate.datasets.0.uri",
    ),
    # list sizes and uniqueness
    Invalid("no datasets", {"spec.evaluate.datasets": []}, "spec.evaluate.datasets"),
    Invalid(
        "a checkpoint-selection validation set that is an evaluation dataset",
        {"spec.optimize": {"checkpointSelection": {"validationUri": "file:///data/heldout.jsonl"}}},
        "spec.optimize.checkpointSelection.validationUri",
        "is an evaluation dataset",
    ),
    Invalid(
        "a dataset with both uri and harness",
        {"spec.evaluate.datasets": [_dataset("heldout"), {**_dataset("general"), "harness": HARNESS}]},
        "spec.evaluate.datasets.1",
        ONE_DATASET_KIND,
    ),
    Invalid(
        "a dataset with neither uri nor harness",
        {"spec.evaluate.datasets": [_dataset("heldout"), {"name": "general"}]},
        "spec.evaluate.datasets.1",
        ONE_DATASET_KIND,
    ),
    Invalid(
        "a harness entry as the first dataset",
        {"spec.evaluate.datasets": [{"name": "general", "harness": HARNESS}, _dataset("heldout")]},
        "spec.evaluate.datasets",
        HARNESS_FIRST,
    ),
    Invalid(
        "a harness entry without tasks",
        {"spec.evaluate.datasets": [_dataset("heldout"), {"name": "general", "harness": {**HARNESS, "tasks": []}}]},
        "spec.evaluate.datasets.1.harness.tasks",
    ),
    Invalid(
        "17 datasets", {"spec.evaluate.datasets": [_dataset(f"d{i}") for i in range(17)]}, "spec.evaluate.datasets"
    ),
    Invalid(
        "two datasets with the same name",
        {"spec.evaluate.datasets": [_dataset("heldout"), _dataset("heldout")]},
        "spec.evaluate.datasets",
        says="dataset names must be unique",
    ),
    Invalid("no gates", {"spec.promotion.gates": []}, "spec.promotion.gates"),
    Invalid(
        "two gates with the same name",
        {"spec.promotion.gates": [GATE, {**GATE, "successCondition": "true"}]},
        "spec.promotion.gates",
        says="gate names must be unique",
    ),
    # cross-field rules (CEL)
    Invalid(
        "majority-vote with one sample per prompt",
        {"spec.acquire.samplesPerPrompt": 1, "spec.select.scorer.type": "majority-vote"},
        "spec.acquire.samplesPerPrompt",
        says=MAJORITY,
    ),
    Invalid(
        "majority-vote with a minVoteShare and one sample per prompt",
        {
            "spec.acquire": {"prompts": {"uri": "p.jsonl"}, "samplesPerPrompt": 1},
            "spec.select": {"scorer": {"type": "majority-vote", "minVoteShare": 0.5}},
        },
        "spec.acquire.samplesPerPrompt",
        says=MAJORITY,
    ),
    Invalid(
        "a pass@k whose k is above the samples drawn",
        {"spec.evaluate.refinement": {"samples": 4, "passAtK": [1, 8]}},
        "spec.evaluate.refinement.passAtK",
        says=PASS_AT_K,
    ),
    Invalid(
        "a pass@k above the default 8 samples",
        {"spec.evaluate.refinement": {"passAtK": [16]}},
        "spec.evaluate.refinement.passAtK",
        says=PASS_AT_K,
    ),
    Invalid(
        "a self-refine template without the {answer} placeholder",
        {"spec.evaluate.refinement": {"selfRefine": {"rounds": 1, "template": "Improve: {prompt}"}}},
        "spec.evaluate.refinement.selfRefine.template",
    ),
    Invalid("a pass@k of 0", {"spec.evaluate.refinement": {"passAtK": [0]}}, "spec.evaluate.refinement.passAtK.0"),
    Invalid(
        "negative self-refine rounds",
        {"spec.evaluate.refinement": {"selfRefine": {"rounds": -1}}},
        "spec.evaluate.refinement.selfRefine.rounds",
    ),
    Invalid(
        "a dpo block with method sft",
        {"spec.optimize": {"dpo": {"beta": 0.2}}},
        "spec.optimize.dpo",
        says=DPO_BLOCK,
    ),
    Invalid(
        "a grpo block with method dpo",
        {"spec.optimize": {"method": "dpo", "grpo": {"numGenerations": 4}}},
        "spec.optimize.grpo",
        says=GRPO_BLOCK,
    ),
    Invalid(
        "grpo whose batch does not hold whole groups",
        {"spec.optimize": {"method": "grpo", "grpo": {"numGenerations": 6}, "hyperparameters": {"batchSize": 16}}},
        "spec.optimize.hyperparameters.batchSize",
        says=GRPO_GROUPS,
    ),
    Invalid(
        "grpo with the default 8 generations and a batch of 12",
        {"spec.optimize": {"method": "grpo", "hyperparameters": {"batchSize": 12}}},
        "spec.optimize.hyperparameters.batchSize",
        says=GRPO_GROUPS,
    ),
    Invalid(
        "prompts with neither a uri nor a generator",
        {"spec.acquire.prompts": {"perIteration": 10}},
        "spec.acquire.prompts",
        says=NO_PROMPTS,
    ),
    Invalid(
        "prompts with both a uri and a generator",
        {"spec.acquire.prompts.generator": "problems:additions"},
        "spec.acquire.prompts.generator",
        says=TWO_SOURCES,
    ),
    Invalid(
        "selfInstruct with a generator and no uri",
        {"spec.acquire.prompts": {"generator": "problems:additions", "selfInstruct": {"count": 8}}},
        "spec.acquire.prompts.selfInstruct",
        says=NO_POOL,
    ),
    Invalid(
        "a selfInstruct template without the {examples} placeholder",
        {"spec.acquire.prompts.selfInstruct": {"count": 8, "template": "Write a new task:\n"}},
        "spec.acquire.prompts.selfInstruct.template",
    ),
    Invalid(
        "a gate without any condition",
        {"spec.promotion.gates.0.successCondition": DELETE},
        "spec.promotion.gates.0",
        says=NO_CONDITION,
    ),
    Invalid(
        "a name longer than 40",
        {"metadata.name": "x" * 41},
        "metadata.name",
        says="a DNS label of at most 40 characters",
    ),
    Invalid(
        "a name with a dot (a DNS subdomain, not a label)",
        {"metadata.name": "my.loop"},
        "metadata.name",
        says="a DNS label of at most 40 characters",
    ),
    # Python only
    Invalid(
        "a select answerPattern that does not compile",
        {"spec.select.scorer.answerPattern": "([0-9]+"},
        "spec.select.scorer.answerPattern",
        sil_validate_only=REGEX,
    ),
    Invalid(
        "an evaluate answerPattern that does not compile",
        {"spec.evaluate.answerPattern": "([0-9]+"},
        "spec.evaluate.answerPattern",
        sil_validate_only=REGEX,
    ),
    Invalid(
        "a successCondition that is not CEL",
        {"spec.promotion.gates.0.successCondition": "result >="},
        "spec.promotion.gates.0.successCondition",
        sil_validate_only=CEL,
    ),
    Invalid(
        "a failureCondition with an unknown variable",
        {"spec.promotion.gates.0.failureCondition": "best < 1"},
        "spec.promotion.gates.0.failureCondition",
        sil_validate_only=CEL,
    ),
]

"""The optimization methods as the spec and the stage contract know them: names, data shapes, settings, rules.

What a method *is* to everything but the optimize stage (the spec's `optimize.method` enum and its description,
the CEL rules tying `optimize.<method>` blocks to `method`, the data shape select writes, `sil explain`, the
README's table) is plain data here, in the core, which imports no training code. How a method *trains* is its
module in `sil_stages.optimize.methods`, whose `REGISTRY` pairs each of these with a train function (a unit test
keeps the two lists equal). Adding a method: its `MethodSpec` here (and its settings model in `settings` with its
block in `Optimization`), its module in `optimize/methods/`, its line in that registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from sil_stages.core.checks import CelCheck
from sil_stages.core.settings import Dpo, Grpo

DataShape = Literal["prompt-completion", "preference", "prompt-only"]
"""The training-data shape select writes to `train.jsonl` for a method (TRL's dataset formats):
- prompt-completion: `{prompt, completion}`, the kept completions (SFT);
- preference: `{prompt, chosen, rejected}`, one pair per prompt (DPO);
- prompt-only: `{prompt, record}`, one row per prompt with its record as JSON for the reward (GRPO)."""

DATA_FIELDS: dict[DataShape, tuple[str, ...]] = {
    "prompt-completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt-only": ("prompt",),
}
"""The fields every record of a shape has; the optimize stage checks them before it loads a model."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    """The value of spec.optimize.method; also the name of its settings block, spec.optimize.<name>."""
    summary: str
    """One line for `sil explain` and the CRD: what the method does and when to use it."""
    trainer: str
    """The TRL class that trains (the README's method table)."""
    data: DataShape
    settings: type[BaseModel] | None
    """Its settings model (spec.optimize.<name>), or None when the shared hyperparameters are all it needs."""
    empty_data: str | None = None
    """None: no training data is not an error (the init model becomes the candidate and the gates reject it).
    Otherwise the one-line reason why it is an error and what to change (the stage exits 2)."""
    checks: tuple[CelCheck, ...] = field(default=())
    """Rules over spec.optimize (`self`) a loop using this method must satisfy."""

    def settings_of(self, config: Any) -> Any:
        """This method's settings block of an `Optimization` (its defaults when the block is absent)."""
        if self.settings is None:
            return None
        block = getattr(config, self.name, None)
        return block if block is not None else self.settings()


SFT = MethodSpec(
    name="sft",
    summary="supervised fine-tuning on the selected completions with TRL's SFTTrainer (rejection sampling / "
    "STaR / ReST-EM)",
    trainer="trl.SFTTrainer",
    data="prompt-completion",
    settings=None,
)

DPO = MethodSpec(
    name="dpo",
    summary="iterative DPO with TRL's DPOTrainer on preference pairs (best vs worst scored completion of a "
    "prompt, see select.pairs); lossType [sigmoid, sft] is RPO",
    trainer="trl.DPOTrainer",
    data="preference",
    settings=Dpo,
    empty_data=(
        "train_uri: select produced no preference pair (all completions of every prompt scored the same, or no "
        "margin reached select.pairs.minMargin); sample more per prompt (acquire.samplesPerPrompt), raise "
        "acquire.sampling.temperature or lower select.pairs.minMargin"
    ),
)

GRPO_DEFAULT_GENERATIONS = Grpo.model_fields["num_generations"].default
_GROUPS = f"(has(self.grpo) ? self.grpo.numGenerations : {GRPO_DEFAULT_GENERATIONS})"

GRPO = MethodSpec(
    name="grpo",
    summary="reinforcement learning with verifiable rewards with TRL's GRPOTrainer: rollouts scored by "
    "select.scorer (a verifier, or majority-vote for label-free TTRL)",
    trainer="trl.GRPOTrainer",
    data="prompt-only",
    settings=Grpo,
    checks=(
        CelCheck(
            # has(): the API server also checks the rule against the CRD's `default: {}` of spec.optimize.
            rule="!has(self.method) || self.method != 'grpo' || "
            f"(self.hyperparameters.batchSize * self.hyperparameters.gradientAccumulationSteps) % {_GROUPS} == 0",
            message="method grpo: hyperparameters.batchSize x gradientAccumulationSteps (completions per optimizer "
            "step) must be divisible by grpo.numGenerations (default "
            f"{GRPO_DEFAULT_GENERATIONS}), so that every step holds whole groups",
            field_path=".hyperparameters.batchSize",
        ),
    ),
)

METHODS: dict[str, MethodSpec] = {method.name: method for method in (SFT, DPO, GRPO)}
DEFAULT_METHOD = SFT.name


def method_spec(name: str) -> MethodSpec:
    """The method `name`; a KeyError names the known ones (config validation makes this unreachable)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"method {name!r} is not registered; known: {', '.join(METHODS)}") from None

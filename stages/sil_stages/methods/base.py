"""The protocol every optimization method follows: what data it trains on, its settings, its train function.

A method is one module in this package that defines a `METHOD` (a `Method`) and is listed in `REGISTRY`
(`sil_stages.methods`). Everything else (the spec's `optimize.method` enum and its blocks' CEL rules, the select
output shape, `sil explain`, the README's table) reads the registry, so adding a method is one module plus its
settings model in `sil_stages.settings` (and its block in `Optimization`).

This module imports no ML library: the operator imports the registry for the spec, and a method's train function
imports torch, TRL and peft only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from sil_stages.records import Record
    from sil_stages.store import Store

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
class CelCheck:
    """A cross-field rule of spec.optimize in CEL (`self` is spec.optimize); the operator turns it into a CelRule,
    so `sil validate` and the API server both check it. Kept as plain data here: stages carry no operator code."""

    rule: str
    message: str
    field_path: str


@dataclass(frozen=True)
class TrainingJob:
    """What a train function gets: the stage config, the models (resolved local paths), the data, a work folder.

    The train function saves the candidate (a full model, merged when LoRA was used) to `checkpoint` and, with
    LoRA, the adapter to `adapter`; it returns the metrics for the manifest.
    """

    config: Any
    """The `OptimizeConfig` (typed Any here: contract imports this module)."""
    model_path: str
    base_model: Callable[[], str]
    """spec.model resolved to a local path (or hub id) when called: for methods whose reference can be the base
    model. Lazy, so that no other method downloads it."""
    records: list[Record]
    workdir: Path
    seed: int
    store: Store | None = None
    """The loop's store: resolves the model URIs a reward scorer names (select.scorer.model)."""

    @property
    def checkpoint(self) -> Path:
        return self.workdir / "checkpoint"

    @property
    def adapter(self) -> Path:
        return self.workdir / "adapter"


TrainFunction = Callable[[TrainingJob], dict[str, float]]


@dataclass(frozen=True)
class Method:
    name: str
    """The value of spec.optimize.method; also the name of its settings block, spec.optimize.<name>."""
    summary: str
    """One line for `sil explain` and the CRD: what the method does and when to use it."""
    trainer: str
    """The TRL class that trains (the README's method table)."""
    data: DataShape
    settings: type[BaseModel] | None
    """Its settings model (spec.optimize.<name>), or None when the shared hyperparameters are all it needs."""
    train: TrainFunction
    empty_data: str | None = None
    """None: no training data is not an error (the init model becomes the candidate and the gates reject it).
    Otherwise the one-line reason why it is an error and what to change (the stage exits 2)."""
    checks: tuple[CelCheck, ...] = field(default=())

    def settings_of(self, config: Any) -> Any:
        """This method's settings block of an `Optimization` (its defaults when the block is absent)."""
        if self.settings is None:
            return None
        block = getattr(config, self.name, None)
        return block if block is not None else self.settings()

"""What a method's train function gets (`TrainingJob`) and what the registry lists (`Method`: spec + train).

A method is one module in this package that defines a `METHOD` (its `MethodSpec` from `sil_stages.core.methods`
and its train function) and is listed in `REGISTRY` (`sil_stages.optimize.methods`). The spec, the CRD, select and
`sil explain` read the specs in the core; only the optimize stage reads this registry.

This module imports no ML library: a method's train function imports torch, TRL and peft only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sil_stages.core.contract import OptimizeConfig
from sil_stages.core.methods import DataShape, MethodSpec
from sil_stages.core.optimization import Optimization

if TYPE_CHECKING:
    from sil_stages.core.records import Record
    from sil_stages.core.store import Store


@dataclass(frozen=True)
class TrainingJob:
    """What a train function gets: the stage config, the models (resolved local paths), the data, a work folder.

    The train function saves the candidate (a full model, merged when LoRA was used) to `checkpoint` and, with
    LoRA, the adapter to `adapter`; it returns the metrics for the manifest.
    """

    config: OptimizeConfig
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
    """A method as the optimize stage runs it: its spec (`sil_stages.core.methods`) and its train function."""

    spec: MethodSpec
    train: TrainFunction

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def data(self) -> DataShape:
        return self.spec.data

    @property
    def empty_data(self) -> str | None:
        return self.spec.empty_data

    def settings_of(self, config: Optimization) -> Any:
        """This method's settings block of an `Optimization` (its defaults when the block is absent)."""
        return self.spec.settings_of(config)

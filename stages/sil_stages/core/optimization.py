"""spec.optimize's training settings (`Optimization`), shared by the spec and the optimize stage's config.

Its own module, beside `settings`, because it reads the methods' specs (the `method` enum and its description come
from `sil_stages.core.methods`), which import their settings models from `settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from sil_stages.core.methods import DEFAULT_METHOD, METHODS
from sil_stages.core.settings import CheckpointSelection, Distributed, Dpo, Grpo, Hyperparameters, Lora, Settings


@dataclass(frozen=True)
class RegisteredMethod:
    """A string naming a registered method: checked by pydantic, and an `enum` in the JSON schema (so the CRD)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value: str) -> str:
            if value not in METHODS:
                raise PydanticCustomError("unknown_method", "expected one of {names}", {"names": ", ".join(METHODS)})
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["enum"] = list(METHODS)
        return json_schema


MethodName = Annotated[str, RegisteredMethod()]

_METHODS_TEXT = " ".join(f"{m.name}: {m.summary} ({m.trainer})." for m in METHODS.values())


class Optimization(Settings):
    """How the optimize stage trains: the method, its settings block, LoRA and the shared hyperparameters.

    A method with its own settings has a block named after it; a block that does not match `method` is rejected
    (CEL rules of the operator's OptimizeSpec, generated from the registry).
    """

    method: MethodName = Field(default=DEFAULT_METHOD, description=f"{_METHODS_TEXT} Default: {DEFAULT_METHOD}.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="TRL settings.")
    dpo: Dpo | None = Field(
        default=None, description="Settings of method dpo (only with method: dpo). Default: the defaults below."
    )
    grpo: Grpo | None = Field(
        default=None, description="Settings of method grpo (only with method: grpo). Default: the defaults below."
    )
    lora: Lora | None = Field(
        default=None,
        description="Train a LoRA adapter (peft) instead of every weight, with any method; the candidate checkpoint "
        "is the merged full model, the adapter is saved beside it (optimize/adapter/). Default: none (full "
        "fine-tune).",
    )
    distributed: Distributed = Field(
        default_factory=Distributed,
        description="Training with several processes or nodes (accelerate, DeepSpeed). Default: one process per "
        "GPU the stage sees, one on CPU.",
    )
    checkpoint_selection: CheckpointSelection | None = Field(
        default=None,
        description="Score the model every N steps (or each epoch) on a validation set with the loop's scorer and "
        "hand evaluate the best-scored step instead of the last; the optimize manifest records every score and "
        "the step chosen. Not with DeepSpeed. Default: off (the last step is the candidate).",
    )
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        description="Save the trainer's state every N optimizer steps (and when the stage is stopped with "
        "SIGTERM) under <optimize output>/trainer-checkpoints/; a retried optimize stage resumes from the latest "
        "one instead of step 0. Default: off.",
    )

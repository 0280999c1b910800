"""Reading a loop file: YAML in, a validated `SelfImprovementLoop` out, or errors that name the field.

`sil run` and `sil validate` resolve relative paths against the loop file's directory, so an example folder works
from any working directory. On Kubernetes the API server validates with the CRD generated from the same models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sil_operator.api.rules import CEL_RULE_ERROR
from sil_operator.api.spec import LoopSpec, SelfImprovementLoop
from sil_stages.core.settings import EvalDataset
from sil_stages.core.store import to_uri


class SpecError(ValueError):
    """The loop file is not a valid SelfImprovementLoop; `problems` lists one line per field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid SelfImprovementLoop\n" + "\n".join(f"  {p}" for p in problems))


RENAMED_FIELDS: dict[str, str] = {
    "spec.select.keep.maxPerPrompt": "renamed: write `topK` (spec.select.keep.topK) with the same number",
}
"""Fields an earlier version accepted, and what they became: an old loop file gets the new name, not a bare
'unknown field'."""

REPLACED_VALUES: dict[str, tuple[type, str]] = {
    "spec.select.keep.dedupe": (
        bool,
        "`dedupe: true` became `dedupe: {method: exact}` (`{method: minhash}` also drops near-duplicates); "
        "for `false`, leave the field out",
    ),
}
"""Fields whose old value form changed: (the old value's type, what to write now)."""


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"])
    if kind == CEL_RULE_ERROR:
        # A CEL rule is reported where its fieldPath points, as the API server does; without one, at its object
        # (the root rules' messages name their field themselves).
        loc += [part for part in str(error.get("ctx", {}).get("field_path", "")).split(".") if part]
        return f"{'.'.join(loc)}: {message}" if loc else message
    path = ".".join(loc) or "(document)"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "extra_forbidden":
        if path in RENAMED_FIELDS:
            return f"{path}: {RENAMED_FIELDS[path]}"
        return f"{path}: unknown field (check its spelling; `sil explain` lists the fields)"
    replaced = REPLACED_VALUES.get(path)
    if replaced is not None and isinstance(error.get("input"), replaced[0]):
        return f"{path}: {replaced[1]}"
    if kind == "missing":
        return f"{path}: required field is missing"
    given = error.get("input")
    shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
    return f"{path}: {message}{shown}"


def parse_loop(document: Any, source: str = "<loop>") -> SelfImprovementLoop:
    if not isinstance(document, dict):
        raise SpecError(source, ["(document): expected a YAML mapping with apiVersion, kind, metadata and spec"])
    try:
        return SelfImprovementLoop.model_validate(document)
    except ValidationError as error:
        raise SpecError(source, [_describe(dict(e)) for e in error.errors()]) from None


def load_loop(path: Path) -> SelfImprovementLoop:
    """Loads and validates a loop file; relative URIs become file:// URIs next to the file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(source, [f"(file): cannot read it: {error.strerror}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(source, [f"(yaml): not valid YAML: {error}"]) from None
    loop = parse_loop(document, source)
    return loop.model_copy(update={"spec": resolve_paths(loop.spec, path.parent)})


def _resolve_dataset(dataset: EvalDataset, base: Path) -> EvalDataset:
    """A dataset's file (uri) or its harness task folder (harness.includePath) as an absolute file:// URI."""
    if dataset.harness is not None:
        harness = dataset.harness.model_copy(update={"include_path": to_uri(dataset.harness.include_path, base)})
        return dataset.model_copy(update={"harness": harness})
    if dataset.uri is None:
        return dataset
    return dataset.model_copy(update={"uri": to_uri(dataset.uri, base)})


def resolve_paths(spec: LoopSpec, base: Path) -> LoopSpec:
    """Every URI in the spec that is a plain path becomes an absolute file:// URI relative to `base`."""

    def uri(value: str) -> str:
        return to_uri(value, base)

    prompts = spec.acquire.prompts
    if prompts.uri is not None:
        prompts = prompts.model_copy(update={"uri": uri(prompts.uri)})
    acquire = spec.acquire.model_copy(update={"prompts": prompts})
    evaluate = spec.evaluate.model_copy(
        update={"datasets": [_resolve_dataset(d, base) for d in spec.evaluate.datasets]}
    )
    optimize = spec.optimize
    selection = optimize.checkpoint_selection
    if selection is not None:
        selection = selection.model_copy(update={"validation_uri": uri(selection.validation_uri)})
        optimize = optimize.model_copy(update={"checkpoint_selection": selection})
    scorer = spec.select.scorer
    if scorer.model is not None:
        scorer = scorer.model_copy(update={"model": uri(scorer.model)})
    select = spec.select.model_copy(update={"scorer": scorer})
    return spec.model_copy(
        update={
            "model": spec.model.model_copy(update={"uri": uri(spec.model.uri)}),
            "storage": spec.storage.model_copy(update={"uri": uri(spec.storage.uri)}),
            "acquire": acquire,
            "select": select,
            "optimize": optimize,
            "evaluate": evaluate,
        }
    )

"""`sil explain spec.select.keep`: the field documentation, read from the API models themselves.

The same descriptions become the CRD's `kubectl explain` text, so both always agree.
"""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sil_operator.api.spec import LoopSpec


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:  # a constrained type inside a union (e.g. a temperature or auto): its base type
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (list, tuple):
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return ""
    return "" if field.default is PydanticUndefined or field.default is None else f"default {field.default!r}"


def _camel(model: type[BaseModel]) -> dict[str, tuple[str, FieldInfo]]:
    return {(f.alias or name): (name, f) for name, f in model.model_fields.items()}


def explain(path: str) -> str:
    """Documentation for `spec` or a dotted field path under it (camelCase, as in the YAML)."""
    parts = path.split(".")
    if parts[0] != "spec":
        raise KeyError(f"{path}: field paths start with spec, e.g. spec.acquire.samplesPerPrompt")
    model: type[BaseModel] = LoopSpec
    title, description, type_name = "spec", "The desired state of a SelfImprovementLoop.", "object"
    for index, part in enumerate(parts[1:], start=1):
        fields = _camel(model)
        if part not in fields:
            raise KeyError(
                f"{'.'.join(parts[: index + 1])}: no such field; fields of {'.'.join(parts[:index])}: "
                + ", ".join(fields)
            )
        _, info = fields[part]
        title, description, type_name = (
            ".".join(parts[: index + 1]),
            info.description or "",
            _type_name(info.annotation),
        )
        nested = _models_in(info.annotation)
        if index < len(parts) - 1:
            if not nested:
                raise KeyError(f"{title}: {type_name} has no fields")
            model = nested[0]
        elif nested:
            model = nested[0]
        else:
            return f"FIELD: {title} <{type_name}>\n\n{description}"
    lines = [f"FIELD: {title} <{type_name}>", "", description, "", "FIELDS:"]
    for alias, (_, info) in _camel(model).items():
        default = _default(info)
        lines.append(f"  {alias} <{_type_name(info.annotation)}>{'  (' + default + ')' if default else ''}")
        lines.append(f"    {info.description or ''}")
    return "\n".join(lines)

"""The CustomResourceDefinition, generated from the API models: one source of truth.

`sil crd > crds/selfimprove.dev_selfimprovementloops.yaml` writes it; a unit test fails when the checked-in file
is stale. The pydantic JSON schema is turned into a Kubernetes structural schema: `$ref`s inlined, optional
fields made nullable, `Literal`s as enums, free-form maps preserved, defaults, bounds and patterns kept, field
descriptions kept (they are the `kubectl explain` text). Every rule comes from the models: field-level ones through
pydantic's schema, cross-field ones as the models' CEL `cel_rules` (x-kubernetes-validations), which `sil validate`
evaluates too; nothing is written here by hand, so the API server rejects the same mistakes as `sil validate`.
"""

from __future__ import annotations

from typing import Any

import yaml

from sil_operator.api.spec import API_GROUP, API_VERSION, KIND, LoopSpec, SelfImprovementLoop
from sil_operator.api.status import LoopStatus

PLURAL = "selfimprovementloops"
SINGULAR = "selfimprovementloop"
SHORT_NAMES = ["sil"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"

_DROP = {"title", "additionalProperties", "propertyNames"}


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            target = definitions[schema["$ref"].split("/")[-1]]
            merged = {**_inline(target, definitions), **{k: v for k, v in schema.items() if k != "$ref"}}
            return _inline(merged, definitions)
        return {key: _inline(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    return schema


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node → one structural OpenAPI v3 node."""
    schema = dict(schema)
    nullable = False
    if "anyOf" in schema:
        choices = schema.pop("anyOf")
        options = [o for o in choices if o.get("type") != "null"]
        nullable = len(options) < len(choices)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            schema.update({"x-kubernetes-int-or-string": True})
        elif types == {"number", "string"} and len(options) == 2:
            schema.update(_number_or_word(options))
        elif len(options) == 1:
            schema = {**options[0], **schema}
        else:
            raise ValueError(f"cannot express anyOf {options} in a structural schema")
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if "exclusiveMinimum" in schema:
        schema["minimum"], schema["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        schema["maximum"], schema["exclusiveMaximum"] = schema["exclusiveMaximum"], True
    if schema.get("default", "absent") is None:
        del schema["default"]
    additional = schema.get("additionalProperties")
    out: dict[str, Any] = {k: v for k, v in schema.items() if k not in _DROP and k not in ("properties", "items")}
    if schema.get("type") == "object" or "properties" in schema:
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {name: _structural(node) for name, node in schema["properties"].items()}
            required = set(schema.get("required", []))
            for name, node in out["properties"].items():
                # An optional object whose fields are all optional defaults to {}, so the API server fills in
                # its fields' defaults even when the user leaves the whole object out (what `kubectl get` shows
                # is then what runs).
                if name not in required and _all_optional_object(node) and "default" not in node:
                    node["default"] = {}
        elif isinstance(additional, dict):
            out["additionalProperties"] = _structural(additional)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if schema.get("type") == "array":
        out["items"] = _structural(schema.get("items", {}))
    if nullable and "default" not in out:
        out["nullable"] = True
    return out


def _number_or_word(options: list[dict[str, Any]]) -> dict[str, Any]:
    """A number or one fixed word (a temperature or `auto`). A structural schema has no number-or-string type (only
    int-or-string, which refuses 0.5), so the node is left untyped and checked by keywords that each apply to one
    JSON type only: the number's bounds to numbers, a pattern of the allowed words to strings. (CEL cannot help: the
    API server gives rules no view of an untyped value.) A boolean, list or object passes the API server; the
    operator's parse_loop rejects it, naming the field."""
    number = next(o for o in options if o.get("type") == "number")
    word = next(o for o in options if o.get("type") == "string")
    words = [word["const"]] if "const" in word else list(word.get("enum", []))
    if not words:
        raise ValueError(f"cannot express a number or any string {options} in a structural schema")
    node: dict[str, Any] = {k: v for k, v in number.items() if k != "type"}
    node["pattern"] = "^(" + "|".join(words) + ")$"
    node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def _all_optional_object(node: dict[str, Any]) -> bool:
    return (
        node.get("type") == "object" and "properties" in node and not node.get("required") and not node.get("nullable")
    )


def openapi_schema(model: type[LoopSpec] | type[LoopStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _structural(_inline(raw, definitions))


def crd() -> dict[str, Any]:
    spec = openapi_schema(LoopSpec)
    status = openapi_schema(LoopStatus)
    status["x-kubernetes-preserve-unknown-fields"] = True  # room for kopf and future fields; ours are typed
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Iteration", "type": "integer", "jsonPath": ".status.iteration"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxIterations", "priority": 1},
        {
            "name": "Champion",
            "type": "integer",
            "jsonPath": ".status.champion.iteration",
            "description": "Iteration of the champion (0: the base model)",
        },
        {"name": "Score", "type": "number", "jsonPath": ".status.champion.score"},
        {
            "name": "Progress",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Progressing")].reason',
            "description": "Why the loop is (not) progressing: StageRunning, StageQueued, StagePreempted, "
            "GatesRunning, a blocked stage's cause",
        },
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["selfimprove"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A self-improvement loop: each iteration the champion model generates "
                            "data, the data is scored and filtered, a candidate is trained on it and evaluated, and "
                            "promotion gates decide whether it becomes the champion.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": [rule.to_schema() for rule in SelfImprovementLoop.cel_rules],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from operator/sil_operator/api by `sil crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)

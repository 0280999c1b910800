"""The CRD is generated from the API models; the checked-in copy must be current and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from sil_operator.api.spec import SelfImprovementLoop
from sil_operator.crd import crd, crd_yaml
from sil_stages.core.settings import DATA_URI_PATTERN, DNS_LABEL_PATTERN, MODEL_URI_PATTERN, VERIFIER_PATTERN

CHECKED_IN = Path(__file__).resolve().parents[3] / "crds" / "selfimprove.dev_selfimprovementloops.yaml"


def test_the_checked_in_crd_is_current() -> None:
    assert CHECKED_IN.read_text() == crd_yaml(), (
        "crds/ is stale: run `.venv/bin/sil crd > crds/selfimprove.dev_selfimprovementloops.yaml`"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_the_schema_is_structural_and_documented() -> None:
    version = crd()["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        number_or_word = node.get("x-kubernetes-preserve-unknown-fields") and "pattern" in node and "maximum" in node
        has_type = "type" in node or node.get("x-kubernetes-int-or-string") or number_or_word
        assert has_type, f"{path} has no type"
        if path.count(".") >= 1 and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"


def test_defaults_and_bounds_reach_the_api_server() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    samples = spec["acquire"]["properties"]["samplesPerPrompt"]
    assert (samples["default"], samples["minimum"], samples["maximum"]) == (4, 1, 256)
    assert spec["acquire"]["properties"]["engine"]["enum"] == ["transformers", "vllm"]
    assert spec["promotion"]["properties"]["gates"]["x-kubernetes-list-map-keys"] == ["name"]
    resources = spec["runtime"]["properties"]["resources"]["additionalProperties"]["additionalProperties"]
    assert resources == {"x-kubernetes-int-or-string": True}


def test_printer_columns_show_the_loop_at_a_glance() -> None:
    columns = [c["name"] for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:2] == ["Phase", "Iteration"]
    assert "Progress" in columns, "a stage held by its queue shows as StageQueued or StagePreempted"
    assert {"Champion", "Score", "Age"} <= set(columns)


def test_the_file_is_valid_yaml_with_a_status_subresource() -> None:
    document = yaml.safe_load(CHECKED_IN.read_text())
    assert document["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert document["spec"]["names"]["shortNames"] == ["sil"]


def _models(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    seen = set() if seen is None else seen
    if model not in seen:
        seen.add(model)
        for info in model.model_fields.values():
            for arg in _nested(info.annotation):
                _models(arg, seen)
    return seen


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested(a)]


def test_every_cel_rule_of_the_crd_is_a_rule_of_a_model_and_every_model_rule_is_in_the_crd() -> None:
    """Nothing is written by hand in crd.py: the CRD's rules are exactly the models' cel_rules (which sil validate
    evaluates too) and the settings models' cross_field rules (whose Python twins sil validate runs)."""
    declared = {
        rule.to_schema()["rule"]
        for model in _models(SelfImprovementLoop)
        for rule in (*getattr(model, "cel_rules", ()), *getattr(model, "cross_field", ()))
    }
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: set[str] = {v["rule"] for v in schema.get("x-kubernetes-validations", [])}
    for _, node in _walk(schema["properties"]["spec"], "spec"):
        found |= {v["rule"] for v in node.get("x-kubernetes-validations", [])}
    assert declared and found == declared


def test_field_rules_reach_the_crd_as_patterns_and_bounds() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["evaluate"]["properties"]["verifier"]["pattern"] == VERIFIER_PATTERN, "the drift case"
    assert spec["select"]["properties"]["scorer"]["properties"]["verifier"]["pattern"] == VERIFIER_PATTERN
    assert spec["model"]["properties"]["uri"]["pattern"] == MODEL_URI_PATTERN
    for uri in (spec["storage"]["properties"]["uri"], spec["acquire"]["properties"]["prompts"]["properties"]["uri"]):
        assert uri["pattern"] == DATA_URI_PATTERN
    dataset = spec["evaluate"]["properties"]["datasets"]["items"]["properties"]
    assert (dataset["name"]["pattern"], dataset["name"]["maxLength"]) == (DNS_LABEL_PATTERN, 63)
    assert dataset["uri"]["pattern"] == DATA_URI_PATTERN


def test_a_temperature_is_a_number_in_bounds_or_the_word_auto() -> None:
    """No structural type is number-or-string: the node is untyped, its bounds apply to numbers and its pattern to
    strings (tests/invalid_specs.py checks both against the real API server)."""
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    node = spec["acquire"]["properties"]["sampling"]["properties"]["temperature"]
    assert "type" not in node and node["x-kubernetes-preserve-unknown-fields"] is True
    assert (node["minimum"], node["maximum"], node["pattern"], node["default"]) == (0.0, 5.0, "^(auto)$", 1.0)
    rollout = spec["optimize"]["properties"]["grpo"]["properties"]["temperature"]
    assert (rollout["minimum"], rollout["exclusiveMinimum"], rollout["pattern"]) == (0.0, True, "^(auto)$")

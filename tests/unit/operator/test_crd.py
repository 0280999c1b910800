"""The CRD is generated from the API models; the checked-in copy must be current and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sil_operator.crd import crd, crd_yaml

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
        has_type = "type" in node or node.get("x-kubernetes-int-or-string")
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
    assert {"Champion", "Score", "Age"} <= set(columns)


def test_the_file_is_valid_yaml_with_a_status_subresource() -> None:
    document = yaml.safe_load(CHECKED_IN.read_text())
    assert document["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert document["spec"]["names"]["shortNames"] == ["sil"]

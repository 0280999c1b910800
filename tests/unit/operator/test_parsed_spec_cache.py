"""The operator parses a loop's spec once per generation: parsing checks every CEL rule in Python, which took
~70 % of the event loop's time with 30 loops (bench/scale.py), and a spec changes only with its generation."""

from __future__ import annotations

from typing import Any

import pytest

from sil_operator.api import loader
from sil_operator.api.loader import SpecError
from sil_operator.kube import controller as controller_module
from sil_operator.kube.controller import Controller
from tests.unit.operator.builders import loop_document, with_spec


def body(uid: str = "uid-1", generation: int = 1, **spec: Any) -> dict[str, Any]:
    document = loop_document(**spec)
    document["metadata"].update(uid=uid, generation=generation, resourceVersion="7")
    document["status"] = {"phase": "Running"}
    return document


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources parse_loop was called for, in order."""
    calls: list[str] = []

    def counting(document: Any, source: str = "<loop>") -> Any:
        calls.append(source)
        return loader.parse_loop(document, source)

    monkeypatch.setattr(controller_module, "parse_loop", counting)
    return calls


def test_the_same_generation_is_parsed_once_however_often_the_status_changes(parses: list[str]) -> None:
    controller = Controller(api=None, emit=lambda *_: None)  # type: ignore[arg-type]
    first = controller._parse("ml", "demo", body())
    changed_status = body()
    changed_status["status"] = {"phase": "Succeeded"}
    changed_status["metadata"]["resourceVersion"] = "8"
    assert controller._parse("ml", "demo", changed_status) is first
    assert parses == ["ml/demo"]


def test_a_new_generation_or_a_recreated_loop_is_parsed_again(parses: list[str]) -> None:
    controller = Controller(api=None, emit=lambda *_: None)  # type: ignore[arg-type]
    controller._parse("ml", "demo", body())
    newer = controller._parse("ml", "demo", body(generation=2, maxIterations=7))
    assert newer.spec.max_iterations == 7
    controller._parse("ml", "demo", body(uid="uid-2", generation=2))
    assert len(parses) == 3


def test_an_invalid_spec_is_not_remembered_and_raises_every_time(parses: list[str]) -> None:
    controller = Controller(api=None, emit=lambda *_: None)  # type: ignore[arg-type]
    invalid = with_spec(body(), "spec.maxIterations", 0)
    for _ in range(2):
        with pytest.raises(SpecError, match="maxIterations"):
            controller._parse("ml", "demo", invalid)
    assert len(parses) == 2

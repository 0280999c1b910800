"""The methods' specs (`sil_stages.core.methods`) are the one list of optimization methods: the CRD, `sil explain`,
select's output shape, the optimize stage's registry of train functions and the tests all follow it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.api.spec import LoopSpec
from sil_operator.cli import main
from sil_operator.crd import crd_yaml
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.contract import OptimizeConfig, SelectConfig
from sil_stages.core.methods import METHODS as SPECS
from sil_stages.core.optimization import Optimization
from sil_stages.optimize.methods import REGISTRY
from tests.invalid_specs import patched, valid_loop

TRAINING_TESTS = Path(__file__).resolve().parents[1] / "stages" / "test_methods_training.py"
METHODS = sorted(SPECS)


def _optimize_schema() -> dict[str, Any]:
    document = yaml.safe_load(crd_yaml())
    spec = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    optimize: dict[str, Any] = spec["properties"]["optimize"]
    return optimize


def _training_data_keys() -> set[str]:
    """The methods that test_methods_training.py's TRAINING_DATA has a training set for (read from its source)."""
    tree = ast.parse(TRAINING_TESTS.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "TRAINING_DATA":
            assert isinstance(node.value, ast.Dict)
            return {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    raise AssertionError("test_methods_training.py defines no TRAINING_DATA")


def test_the_optimize_stage_trains_every_method_the_spec_knows_and_no_other() -> None:
    assert list(REGISTRY) == list(SPECS)
    for name, method in REGISTRY.items():
        assert method.spec is SPECS[name], f"{name}'s module uses the spec of sil_stages.core.methods"


@pytest.mark.parametrize("method", METHODS)
def test_every_registered_method_is_in_the_crd_enum_and_described(method: str) -> None:
    field = _optimize_schema()["properties"]["method"]
    assert method in field["enum"]
    assert f"{method}: " in field["description"] and SPECS[method].trainer in field["description"]


@pytest.mark.parametrize("method", METHODS)
def test_every_registered_method_is_in_sil_explain(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "spec.optimize.method"]) == 0
    text = capsys.readouterr().out
    assert f"{method}: " in text and SPECS[method].trainer in text


@pytest.mark.parametrize("method", METHODS)
def test_every_registered_method_has_a_test_that_trains_with_it(method: str) -> None:
    assert method in _training_data_keys(), f"add a {method} training set to TRAINING_DATA in {TRAINING_TESTS.name}"


@pytest.mark.parametrize("method", [m for m in METHODS if SPECS[m].settings is not None])
def test_every_method_with_settings_has_its_block_in_spec_optimize_and_the_crd(method: str) -> None:
    assert Optimization.model_fields[method].annotation == SPECS[method].settings | None
    assert method in _optimize_schema()["properties"], "kubectl explain shows spec.optimize.<method>"


@pytest.mark.parametrize("method", METHODS)
def test_select_writes_the_data_shape_of_the_configured_method(method: str) -> None:
    document = valid_loop()
    spec = LoopSpec.model_validate(patched(document, {"spec.optimize": {"method": method}})["spec"])
    select = build_stage_config(spec, LoopRef("loop"), 1, "select", spec.model.uri)
    assert isinstance(select, SelectConfig)
    assert select.data == SPECS[method].data


def test_the_optimize_config_carries_the_method_its_block_lora_and_what_the_methods_need() -> None:
    document = patched(
        valid_loop(),
        {
            "spec.optimize": {"method": "dpo", "dpo": {"beta": 0.3, "reference": "base"}, "lora": {"r": 4}},
            "spec.select.scorer": {"type": "majority-vote"},
            "spec.pushgateway": {"address": "http://pushgateway:9091"},
        },
    )
    spec = LoopSpec.model_validate(document["spec"])
    config = build_stage_config(spec, LoopRef("loop"), 2, "optimize", "file:///runs/champion")
    assert isinstance(config, OptimizeConfig)
    assert (config.method, config.dpo, config.lora) == ("dpo", spec.optimize.dpo, spec.optimize.lora)
    assert config.base_model_uri == "file:///models/base"
    assert config.scorer.type == "majority-vote"
    assert config.pushgateway == "http://pushgateway:9091"
    assert OptimizeConfig.model_validate_json(config.model_dump_json()) == config, "the config survives JSON"


def test_the_method_blocks_default_to_their_documented_settings() -> None:
    spec = LoopSpec.model_validate(patched(valid_loop(), {"spec.optimize": {"method": "grpo"}})["spec"])
    settings = SPECS["grpo"].settings_of(spec.optimize)
    assert (settings.num_generations, settings.beta, settings.loss_type) == (8, 0.0, "dapo")

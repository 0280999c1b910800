"""Each image imports only what it installs: the operator side without the ML stack, the stage programs without
the operator's packages.

The operator image installs the `operator` extra (no torch, transformers, TRL, tqdm); the stage images the
`stages` extra (no kopf, Kubernetes client, CEL, rich). A module-level import across that line passes every test on
a development machine, where everything is installed, and fails only when the image starts. These tests import each
side in a fresh interpreter where the other side's packages cannot be imported, as in its image.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ML_STACK = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tqdm", "vllm", "deepspeed")
OPERATOR_STACK = ("kopf", "kubernetes", "celpy", "prometheus_client", "rich", "matplotlib")

OPERATOR_MODULES = (
    "sil_operator.cli",
    "sil_operator.crd",
    "sil_operator.kube.handlers",
    "sil_operator.kube.controller",
    "sil_operator.local.runner",
    "sil_operator.gates.analysis",
    "sil_operator.report",
)
STAGE_MODULES = (
    "sil_stages.cli",
    "sil_stages.acquire.stage",
    "sil_stages.select.stage",
    "sil_stages.optimize.stage",
    "sil_stages.evaluate.stage",
    "sil_stages.forkserver",
)


def import_without(modules: tuple[str, ...], blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Import `modules` in a new interpreter whose import system refuses `blocked` (and their submodules)."""
    program = textwrap.dedent(
        f"""
        import importlib, sys
        from importlib.abc import MetaPathFinder

        BLOCKED = {blocked!r}

        class Refuse(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not installed in this image)", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
        for module in {modules!r}:
            importlib.import_module(module)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        """
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'stages'}", "PATH": "/usr/bin:/bin"},
        check=False,
    )


@pytest.mark.parametrize("module", OPERATOR_MODULES)
def test_the_operator_side_imports_without_torch_transformers_trl_or_tqdm(module: str) -> None:
    result = import_without((module,), ML_STACK)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_the_stage_programs_import_without_kopf_or_the_kubernetes_client(module: str) -> None:
    result = import_without((module,), OPERATOR_STACK)
    assert result.returncode == 0, result.stderr[-3000:]

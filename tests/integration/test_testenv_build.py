"""hack/testenv/build.sh and the fixture explain how to get the binaries instead of skipping tests.

These run without a control plane: they point the build script at an empty cache or a missing Go.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.controlplane import BUILD_SCRIPT, ControlPlaneError, find_bin_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run_build_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key not in ("SIL_TESTENV_ASSETS", "GO")}
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args], env=base | env, capture_output=True, text=True, timeout=50, check=False
    )


def test_check_mode_fails_with_build_instructions_when_nothing_is_built(tmp_path: Path) -> None:
    """--check (what the fixture calls) fails and names the command that builds the binaries."""
    result = run_build_script("--check", env={"SIL_TESTENV_CACHE": str(tmp_path)})
    assert result.returncode != 0
    assert result.stdout == ""
    assert "bash hack/testenv/build.sh" in result.stderr
    assert "SIL_TESTENV_ASSETS" in result.stderr


def test_build_fails_with_install_instructions_when_go_is_missing(tmp_path: Path) -> None:
    """Without Go the build stops at once and says where to get Go, instead of a cryptic error."""
    result = run_build_script(env={"SIL_TESTENV_CACHE": str(tmp_path), "GO": str(tmp_path / "no-such-go")})
    assert result.returncode != 0
    assert "Go is not installed" in result.stderr
    assert "https://go.dev/dl/" in result.stderr


def test_prebuilt_assets_folder_must_hold_every_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIL_TESTENV_ASSETS pointing at an incomplete folder is an error naming what is missing."""
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    monkeypatch.setenv("SIL_TESTENV_ASSETS", str(tmp_path))
    with pytest.raises(ControlPlaneError, match="lacks kube-apiserver"):
        find_bin_dir()
    result = run_build_script(env={"SIL_TESTENV_ASSETS": str(tmp_path)})
    assert result.returncode != 0
    assert "lacks" in result.stderr


def test_the_fixture_fails_with_build_instructions_when_nothing_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control plane fixture turns a missing build into an error that says how to build."""
    monkeypatch.delenv("SIL_TESTENV_ASSETS", raising=False)
    monkeypatch.setenv("SIL_TESTENV_CACHE", str(tmp_path))
    with pytest.raises(ControlPlaneError, match=re.escape("bash hack/testenv/build.sh")):
        find_bin_dir()

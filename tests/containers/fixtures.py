"""Session fixtures of the images, for every test folder (registered in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.containers import images


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator and CPU stage images, built from this checkout (cached layers) once per session."""
    log = tmp_path_factory.mktemp("images") / "build.log"
    try:
        names = images.build(["operator", "stage-cpu"], log)
    except RuntimeError as error:
        pytest.fail(str(error))
    return dict(zip(["operator", "stage-cpu"], names, strict=True))


@pytest.fixture(scope="session")
def stage_image(built_images: dict[str, str]) -> str:
    return built_images["stage-cpu"]


@pytest.fixture(scope="session")
def operator_image(built_images: dict[str, str]) -> str:
    return built_images["operator"]

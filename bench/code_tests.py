"""Throughput of the `code-tests` scorer: completions scored per second through the real sandbox.

    PYTHONPATH=operator:stages .venv/bin/python bench/code_tests.py [--completions 10000] [--workers 1 2]
        [--json bench/results/code_tests.json]

Scores `--completions` completions (a mix of a correct program, a wrong one, one that raises and one without
code; three asserts each, one of them with a reference expression) with the scorer select uses, once per worker
count, and prints completions per second in all and per worker. Every completion is a real confined run (fork,
rlimits, Landlock, seccomp, its own work dir, killed and cleaned up after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sil_stages.core.settings import Scorer
from sil_stages.select.scorers import PromptSamples, ScorerContext
from sil_stages.select.scorers.code_tests import CodeTestsScorer

TESTS = ["assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(10, 5) == sum([10, 5])"]
COMPLETIONS = (
    "```python\ndef add(a, b):\n    return a + b\n```",
    "def add(a, b):\n    return a - b\n",
    "def add(a, b):\n    raise ValueError('no')\n",
    "The answer is 3.",
)
PER_PROMPT = 8


def groups(count: int) -> list[PromptSamples]:
    result = []
    for index in range(0, count, PER_PROMPT):
        samples = tuple(COMPLETIONS[(index + k) % len(COMPLETIONS)] for k in range(min(PER_PROMPT, count - index)))
        result.append(PromptSamples(f"Write add, #{index}", samples, {"tests": TESTS}))
    return result


def measure(completions: int, workers: int) -> dict[str, float]:
    settings = Scorer.model_validate({"type": "code-tests", "codeTests": {"concurrency": workers}})
    started = time.monotonic()
    scorer = CodeTestsScorer(ScorerContext(settings=settings))
    startup = time.monotonic() - started
    try:
        work = groups(completions)
        started = time.monotonic()
        scored = scorer.score(work)
        seconds = time.monotonic() - started
    finally:
        scorer.close()
    mean = sum(score.value or 0.0 for group in scored for score in group) / completions
    return {
        "workers": workers,
        "completions": completions,
        "startup_s": round(startup, 2),
        "seconds": round(seconds, 2),
        "per_second": round(completions / seconds, 1),
        "per_second_per_worker": round(completions / seconds / workers, 1),
        "mean_score": round(mean, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completions", type=int, default=10000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=Path("bench/results/code_tests.json"))
    args = parser.parse_args()
    rows = [measure(args.completions, workers) for workers in args.workers]
    table = Table(title=f"code-tests: {args.completions} completions, 3 tests each")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`code-tests`: each completion's Python code runs in a sandbox against its prompt record's tests; the score is
the share of tests passed (so `select.keep.minScore: 1.0` keeps programs that pass them all).

The code of a completion (`extract_code`, the one place this rule lives): the content of its first fenced block
opened by ```python (or ```py / ```python3), else the whole completion. The tests and how a pass is decided
(in the stage, on plain values; expected values never enter the completion's process) are in
`sil_stages.select.code_sandbox.plans`; the sandbox in `code_sandbox.worker` (each run) and `code_sandbox.pool`
(the workers, and the refusal where a protection is missing).
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sil_stages.core import scorers
from sil_stages.select.code_sandbox.plans import TestPlan, Values, passed, plan_record, results_by_index
from sil_stages.select.code_sandbox.pool import Job, Limits, SandboxPool
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext

NAME = scorers.CODE_TESTS.name
_FENCE = re.compile(r"```(?:python3|python|py)[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MIB = 1 << 20


def extract_code(completion: str) -> str:
    """The program a completion gives: its first ```python block's content, else the whole completion."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


class CodeTestsScorer:
    def __init__(self, context: ScorerContext) -> None:
        settings = context.settings.code_tests
        self._field = context.field
        limits = Limits(
            timeout_s=settings.timeout_s,
            memory_bytes=settings.memory_mb * _MIB,
            max_processes=settings.max_processes,
            max_file_bytes=settings.max_file_mb * _MIB,
            max_output_bytes=settings.max_output_bytes,
        )
        workers = settings.concurrency or len(os.sched_getaffinity(0))
        self._pool = SandboxPool(
            limits, workers, frozenset(settings.accept_missing_protections), field=f"{context.field}.codeTests"
        )
        self._finalizer = weakref.finalize(self, self._pool.close)
        self._plans: dict[str, TestPlan] = {}
        self._references: dict[str, dict[int, Any]] = {}
        self._counts = {"runs": 0, "timeouts": 0, "tests": 0, "passed": 0}

    @property
    def protections(self) -> dict[str, Any]:
        """What holds where the stage runs (True, or why not), as the sandbox's probe found it."""
        return self._pool.protections

    def _plan(self, record: Mapping[str, Any], prompt: str) -> tuple[str, TestPlan]:
        key = json.dumps([record.get("tests"), record.get("entryPoint")], sort_keys=True, default=str)
        if key not in self._plans:
            self._plans[key] = plan_record(record, where=f"{self._field} (the record of prompt {prompt[:80]!r})")
        return key, self._plans[key]

    def _reference(self, key: str, plan: TestPlan) -> dict[int, Any]:
        if key not in self._references:
            values: dict[int, Any] = {}
            if plan.reference:
                result = self._pool.run_reference(Job("", plan.setup, plan.reference))
                values = results_by_index(result.lines, len(plan.reference))
            self._references[key] = values
        return self._references[key]

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        planned = [self._plan(group.record, group.prompt) for group in groups]
        references = [self._reference(key, plan) for key, plan in planned]
        jobs = [
            Job(extract_code(completion), plan.setup, plan.candidate)
            for group, (_, plan) in zip(groups, planned, strict=True)
            for completion in group.completions
        ]
        results = iter(self._pool.run(jobs))
        scored: list[list[Score]] = []
        for group, (_, plan), reference in zip(groups, planned, references, strict=True):
            scores: list[Score] = []
            for _completion in group.completions:
                result = next(results)
                values = Values(results_by_index(result.lines, len(plan.candidate)), reference)
                count = sum(passed(test, values) for test in plan.tests)
                self._counts["runs"] += 1
                self._counts["timeouts"] += result.status == "timeout"
                self._counts["tests"] += len(plan.tests)
                self._counts["passed"] += count
                scores.append(
                    Score(count / len(plan.tests), {"passed": count, "tests": len(plan.tests), "run": result.status})
                )
            scored.append(scores)
        return scored

    def report(self) -> dict[str, float]:
        counts = self._counts
        if not counts["runs"]:
            return {}
        return {
            "code_tests_pass_rate": counts["passed"] / counts["tests"],
            "code_tests_timeout_rate": counts["timeouts"] / counts["runs"],
        }

    def close(self) -> None:
        """Stops the sandbox workers now (they also stop when the stage exits: their job channel closes)."""
        self._finalizer()


def build(context: ScorerContext) -> Scorer:
    return CodeTestsScorer(context)

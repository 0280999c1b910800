"""What kopf keeps on the loops and Jobs for itself: as little as the operator's handlers need.

kopf computes, for every watch event of every watched object (loops, Jobs, JobSets), a "diff-base essence": a deep
copy of the whole body, compared with the last one stored in an annotation, for change handlers (`on.create`,
`on.update`, `on.resume`) and timers' idle periods. The operator registers none of those: a daemon per loop and
event handlers, which never read the diff. Building it was 13.5 % of the event loop's time at 1,000 loops
(py-spy, bench/RESULTS.md) and is never stored (kopf stores it only after change handlers ran). `NoDiffBase` makes
it an empty constant. kopf's other writes stay: its finalizer on each loop (added once, removed at deletion; a
daemon requires it so that kopf stops the daemon before the loop goes) and progress annotations (written only by
change handlers, so never). `tests/unit/operator/test_kopf_writes.py` fails if a change handler is registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """An empty essence, never stored: correct only while no change handler or idle timer is registered."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return cast(kopf.BodyEssence, {})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None

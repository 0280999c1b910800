"""Whether the API server serves an optional API (JobSet), asked at most once per TTL.

An optional engine's API may be installed, or removed, while the operator runs: the answer is cached for
DISCOVERY_TTL_SECONDS (so a reconcile costs no discovery call), then asked again, so a JobSet installed later is
used within a minute without restarting the operator. A discovery call that fails for another reason than "not
served" raises: the reconcile fails and is retried, rather than silently choosing another engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

DISCOVERY_TTL_SECONDS = 60.0

Probe = Callable[[str, str, str], Awaitable[bool]]
"""(group, version, plural) → whether the API server serves that resource."""


@dataclass
class ApiDiscovery:
    ttl: float = DISCOVERY_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _answers: dict[tuple[str, str, str], tuple[bool, float]] = field(default_factory=dict)

    async def served(self, probe: Probe, group: str, version: str, plural: str) -> bool:
        key = (group, version, plural)
        now = self.clock()
        cached = self._answers.get(key)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        answer = await probe(group, version, plural)
        self._answers[key] = (answer, now)
        return answer

"""What went wrong in a reconcile, as data: a reason, a message that says what to do, and whether it can heal.

Both runners meet the same failures (a store that does not answer, a manifest that does not parse, a promotion
check that refuses the candidate) and the operator meets a few more (a missing Secret, no stage image). Each is
turned here into a `Failure`: the operator shows it as the loop's `Degraded` condition and retries it on the
`backoff_seconds` schedule, or ends the loop Failed when only a spec change can fix it; `sil run` prints it as
one line. Pure: no I/O, so the table tests pin every classification and the schedule.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

from sil_operator.api.status import Condition, LoopPhase, LoopStatus
from sil_operator.manifests import ManifestUnreadable
from sil_operator.planner import set_conditions
from sil_stages.core.store import StoreError

DEGRADED = "Degraded"
"""The condition type the runners own: True while a failure persists, False once a reconcile succeeds."""

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 300.0
UNREACHABLE_CAP_SECONDS = 10.0
"""The longest pause after a reconcile that failed because the API server did not answer: an outage heals by
itself (a restart, a leader change of etcd), so the loops must notice within seconds once it is back, not wait out
a five-minute backoff earned during it."""


class LoopProblem(Exception):
    """A failure the runner recognises; subclasses name their condition reason and whether a retry can help."""

    reason = "ReconcileError"
    permanent = False


class StageImageMissing(LoopProblem):
    """No image for a stage Job, in the spec or the operator's default: only a spec change helps."""

    reason = "StageImageMissing"
    permanent = True


class StageInputUnreadable(LoopProblem):
    """`sil run --stage-image`: a local file a stage reads is not readable by the image's user; fix its mode."""

    reason = "StageInputUnreadable"
    permanent = True


class ApiServerUnreachable(LoopProblem):
    """The Kubernetes API server did not answer (connection refused or reset, 502/503/504): it heals by itself."""

    reason = "APIServerUnreachable"


class SecretUnavailable(LoopProblem):
    """A Secret the loop names is missing or unusable; creating or fixing it heals the loop."""

    reason = "SecretUnavailable"


class PromotionCheckFailed(LoopProblem):
    """The candidate checkpoint in the store is not the one evaluate verified; nothing is promoted."""

    reason = "PromotionCheckFailed"


@dataclass(frozen=True)
class Failure:
    reason: str
    """CamelCase, for the condition and the event."""
    message: str
    permanent: bool
    """True when retrying cannot help: the loop ends Failed until its spec changes."""

    def line(self) -> str:
        """One line for a terminal: what failed and what to do."""
        return f"{self.reason}: {self.message}"


def classify(error: BaseException) -> Failure:
    """The failure behind an exception raised out of a reconcile (or a `sil run` round)."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, LoopProblem):
        return Failure(error.reason, message, error.permanent)
    if isinstance(error, ManifestUnreadable):
        return Failure("ManifestUnreadable", message, False)
    if isinstance(error, StoreError):
        return Failure("StoreError", message, False)
    if isinstance(error, TimeoutError):
        return Failure("Timeout", f"{message}; the call is retried", False)
    return Failure("ReconcileError", f"{type(error).__name__}: {message}; see the operator's log", False)


def backoff_seconds(failures: int, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """The pause after the `failures`-th failure in a row: base, doubled each time, at most cap."""
    if failures < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 32))


def retry_delay(failure: Failure, failures: int, spread: float) -> float | None:
    """Seconds before the next try after the `failures`-th failure in a row; None when only a spec change helps.

    The backoff schedule, capped at UNREACHABLE_CAP_SECONDS when the API server was unreachable, then scaled into
    [50 %, 100 %] by `spread` (in [0, 1), see `spread_of`): after an outage every loop failed at once, and without
    a spread they would all retry in the same second ("equal jitter").
    """
    if failure.permanent:
        return None
    cap = UNREACHABLE_CAP_SECONDS if failure.reason == ApiServerUnreachable.reason else BACKOFF_CAP_SECONDS
    return backoff_seconds(failures, cap=cap) * (0.5 + 0.5 * min(max(spread, 0.0), 1.0))


def spread_of(key: str) -> float:
    """A fraction in [0, 1) fixed by `key` (e.g. namespace/name/failures): loops spread, a test can predict it."""
    return zlib.crc32(key.encode()) / 2**32


def degraded(status: LoopStatus, failure: Failure | None, now: datetime, generation: int) -> LoopStatus:
    """`status` with its Degraded condition: True with the failure's reason and message, or False (`None`).

    A loop that was never degraded gets no condition from a success, so a healthy status stays as it was; the
    transition time moves only when the condition's status flips.
    """
    previous = next((c for c in status.conditions if c.type == DEGRADED), None)
    if failure is None:
        if previous is None or previous.status == "False":
            return status
        condition = Condition(
            type=DEGRADED,
            status="False",
            reason="Recovered",
            message=f"recovered from {previous.reason}",
            last_transition_time=now,
            observed_generation=generation,
        )
    else:
        flipped = previous is None or previous.status != "True"
        condition = Condition(
            type=DEGRADED,
            status="True",
            reason=failure.reason,
            message=failure.message,
            last_transition_time=now if flipped or previous is None else previous.last_transition_time,
            observed_generation=generation,
        )
    others = [c for c in status.conditions if c.type != DEGRADED]
    return status.model_copy(update={"conditions": [*others, condition]})


def failed_for_good(status: LoopStatus, failure: Failure, now: datetime, generation: int) -> LoopStatus:
    """`status` ended Failed by a failure no retry can heal: the reason says what to change."""
    ended = set_conditions(
        status.model_copy(update={"phase": LoopPhase.FAILED, "message": failure.message}),
        now,
        generation,
        failed=(failure.reason, failure.message),
    )
    return degraded(ended, failure, now, generation)


def is_degraded(status: LoopStatus) -> Condition | None:
    """The Degraded condition when it is True."""
    return next((c for c in status.conditions if c.type == DEGRADED and c.status == "True"), None)

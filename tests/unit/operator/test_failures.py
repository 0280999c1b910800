"""Every failure a reconcile can meet becomes a reason, a message and a verdict (retry or give up), and retries
back off from 5 s to a cap of 5 minutes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sil_operator.api.status import Condition, LoopPhase, LoopStatus
from sil_operator.failures import (
    ApiServerUnreachable,
    Failure,
    PromotionCheckFailed,
    SecretUnavailable,
    StageImageMissing,
    backoff_seconds,
    classify,
    degraded,
    failed_for_good,
    is_degraded,
    retry_delay,
    spread_of,
)
from sil_operator.manifests import ManifestUnreadable
from sil_operator.planner import set_conditions
from sil_stages.core.store import StoreError

from .builders import T0

CLASSIFIED = {
    "api server unreachable": (ApiServerUnreachable("connection refused"), "APIServerUnreachable", False),
    "no stage image": (StageImageMissing("spec.runtime.image: set it"), "StageImageMissing", True),
    "missing secret": (SecretUnavailable("Secret ml/token: Not Found (404)"), "SecretUnavailable", False),
    "promotion check": (PromotionCheckFailed("optimize manifest changed"), "PromotionCheckFailed", False),
    "unreadable manifest": (ManifestUnreadable("s3://b/m: not JSON"), "ManifestUnreadable", False),
    "store error": (StoreError("s3://b/k: access denied"), "StoreError", False),
    "timeout": (TimeoutError("read timed out"), "Timeout", False),
    "anything else": (RuntimeError("boom"), "ReconcileError", False),
}


@pytest.mark.parametrize("case", sorted(CLASSIFIED))
def test_each_failure_has_a_reason_and_says_whether_a_retry_can_heal_it(case: str) -> None:
    error, reason, permanent = CLASSIFIED[case]
    failure = classify(error)
    assert (failure.reason, failure.permanent) == (reason, permanent)
    assert str(error) in failure.message
    assert "\n" not in failure.line()


def test_a_multi_line_message_becomes_one_line() -> None:
    assert classify(StoreError("first\n  second")).message == "first second"


def test_an_unknown_error_names_its_type_and_where_to_look() -> None:
    assert classify(KeyError("x")).message == "KeyError: 'x'; see the operator's log"


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0.0), (1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0), (50, 300.0), (10_000, 300.0)],
)
def test_backoff_doubles_from_5_seconds_to_a_cap_of_5_minutes(failures: int, seconds: float) -> None:
    assert backoff_seconds(failures) == seconds


@pytest.mark.parametrize(
    ("failures", "spread", "seconds"),
    [(1, 0.0, 2.5), (1, 0.5, 3.75), (2, 0.999, 9.995), (7, 0.0, 150.0), (7, 0.5, 225.0), (50, 0.5, 225.0)],
)
def test_a_retry_waits_between_half_and_all_of_the_backoff_as_the_spread_says(
    failures: int, spread: float, seconds: float
) -> None:
    assert retry_delay(classify(StoreError("s3://b: slow")), failures, spread) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("failures", "spread", "seconds"), [(1, 0.0, 2.5), (2, 0.5, 7.5), (3, 0.0, 5.0), (9, 0.5, 7.5)]
)
def test_an_unreachable_api_server_is_retried_within_10_seconds_however_long_the_outage(
    failures: int, spread: float, seconds: float
) -> None:
    assert retry_delay(classify(ApiServerUnreachable("refused")), failures, spread) == pytest.approx(seconds)


def test_a_permanent_failure_is_not_retried() -> None:
    assert retry_delay(classify(StageImageMissing("spec.runtime.image: set it")), 1, 0.5) is None


def test_the_spread_is_a_fraction_fixed_by_the_key_and_different_across_loops() -> None:
    spreads = [spread_of(f"ml/loop-{i}/3") for i in range(200)]
    assert all(0.0 <= s < 1.0 for s in spreads)
    assert spread_of("ml/loop-7/3") == spreads[7]
    assert min(spreads) < 0.1 and max(spreads) > 0.9, "200 loops spread over the whole range"


def _degraded_of(status: LoopStatus) -> tuple[str, str, str] | None:
    found = next((c for c in status.conditions if c.type == "Degraded"), None)
    return None if found is None else (found.status, found.reason, found.message)


def test_a_failure_sets_degraded_and_a_success_clears_it() -> None:
    failure = Failure("StoreError", "s3://b: no answer", False)
    status = degraded(LoopStatus(), failure, T0, 1)
    assert _degraded_of(status) == ("True", "StoreError", "s3://b: no answer")
    assert is_degraded(status) is not None
    healed = degraded(status, None, T0 + timedelta(seconds=5), 1)
    assert _degraded_of(healed) == ("False", "Recovered", "recovered from StoreError")
    assert is_degraded(healed) is None
    assert degraded(healed, None, T0 + timedelta(seconds=9), 1) == healed


def test_a_healthy_loop_gets_no_degraded_condition() -> None:
    assert degraded(LoopStatus(), None, T0, 1) == LoopStatus()


def test_degraded_keeps_its_transition_time_while_the_failure_persists() -> None:
    first = degraded(LoopStatus(), Failure("StoreError", "a", False), T0, 1)
    again = degraded(first, Failure("SecretUnavailable", "b", False), T0 + timedelta(seconds=30), 1)
    condition = next(c for c in again.conditions if c.type == "Degraded")
    assert (condition.reason, condition.last_transition_time) == ("SecretUnavailable", T0)


def test_a_permanent_failure_ends_the_loop_failed_with_its_reason() -> None:
    failure = Failure("StageImageMissing", "spec.runtime.image: set it", True)
    status = failed_for_good(LoopStatus(phase=LoopPhase.RUNNING), failure, T0, 2)
    assert status.phase is LoopPhase.FAILED
    assert status.message == "spec.runtime.image: set it"
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "StageImageMissing")


def _condition(kind: str, status: str = "True", reason: str = "Why") -> Condition:
    return Condition(type=kind, status=status, reason=reason, last_transition_time=T0)


@pytest.mark.parametrize(
    ("before", "kept"),
    [
        ([], []),
        ([_condition("Degraded")], [("Degraded", "True", "Why")]),
        ([_condition("Progressing"), _condition("Degraded", "False")], [("Degraded", "False", "Why")]),
        (
            [_condition("Degraded"), _condition("Ready", "Unknown", "Probing"), _condition("Failed")],
            [("Degraded", "True", "Why"), ("Ready", "Unknown", "Probing")],
        ),
    ],
)
def test_the_planner_rewrites_its_four_conditions_and_keeps_every_other_one(
    before: list[Condition], kept: list[tuple[str, str, str]]
) -> None:
    status = set_conditions(LoopStatus(conditions=before), T0, 1, progressing=("StageStarted", "acquire"))
    types = [c.type for c in status.conditions]
    assert types[:4] == ["Progressing", "Suspended", "Complete", "Failed"]
    assert [(c.type, c.status, c.reason) for c in status.conditions[4:]] == kept

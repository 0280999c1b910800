"""Leader election's decisions (pure, table-tested) and the renewal deadline of the elector.

The Lease calls themselves run against a real API server in tests/integration/test_leader_election.py; here an
in-memory lock with the same optimistic-concurrency rule (a write must carry the resourceVersion read) stands in,
to drive the elector through failures the control plane cannot easily produce (an API server that stops answering).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sil_operator.cli import main
from sil_operator.kube.leader import (
    Action,
    FollowerHealth,
    LeaderElector,
    LeaseRecord,
    LostLeadership,
    Observed,
    Timing,
    decide,
    is_expired,
    next_record,
    released,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ME, OTHER = "operator-a", "operator-b"


def held_by(holder: str, duration: int = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration, acquire_time=T0, renew_time=T0, transitions=transitions)


@pytest.mark.parametrize(
    ("current", "leading", "observed_at", "now", "expected"),
    [
        (None, False, 0.0, 0.0, Action.CREATE),
        (None, True, 0.0, 0.0, Action.LOST),
        (held_by(ME), True, 100.0, 101.0, Action.RENEW),
        (held_by(ME), False, 100.0, 101.0, Action.RENEW),  # left by an earlier process of this pod
        (held_by(OTHER), False, 100.0, 114.9, Action.WAIT),
        (held_by(OTHER), False, 100.0, 115.0, Action.TAKE),
        (held_by(OTHER, duration=30), False, 100.0, 115.0, Action.WAIT),  # the Lease's own duration counts
        (held_by(""), False, 100.0, 100.0, Action.TAKE),  # released on shutdown: no need to wait
        (held_by(OTHER), True, 100.0, 101.0, Action.LOST),
        (held_by(OTHER), True, 100.0, 200.0, Action.LOST),  # even expired: someone else led meanwhile
        (held_by(""), True, 100.0, 101.0, Action.LOST),
    ],
    ids=[
        "no-lease-follower-creates",
        "no-lease-leader-lost",
        "mine-leader-renews",
        "mine-follower-renews",
        "other-valid-waits",
        "other-expired-takes",
        "other-long-lease-waits",
        "released-takes-at-once",
        "other-named-leader-lost",
        "other-named-expired-leader-lost",
        "released-by-someone-leader-lost",
    ],
)
def test_one_round_decides_by_holder_role_and_expiry(
    current: LeaseRecord | None, leading: bool, observed_at: float, now: float, expected: Action
) -> None:
    assert decide(current, ME, leading=leading, observed_at=observed_at, now=now) is expected


@pytest.mark.parametrize(
    ("observed_at", "now", "expired"),
    [(10.0, 24.9, False), (10.0, 25.0, True), (10.0, 9.0, False)],
    ids=["within", "at-duration", "clock-before-observation"],
)
def test_expiry_counts_from_when_this_process_saw_the_last_change(
    observed_at: float, now: float, expired: bool
) -> None:
    assert is_expired(held_by(OTHER), observed_at, now) is expired


def test_a_renewal_keeps_the_acquire_time_and_the_transitions() -> None:
    later = T0 + timedelta(seconds=2)
    renewed = next_record(held_by(ME, transitions=3), ME, later, 15)
    assert renewed == LeaseRecord(ME, 15, acquire_time=T0, renew_time=later, transitions=3)


def test_a_new_holder_counts_a_transition_and_starts_its_acquire_time() -> None:
    later = T0 + timedelta(seconds=20)
    taken = next_record(held_by(OTHER, transitions=3), ME, later, 15)
    assert taken == LeaseRecord(ME, 15, acquire_time=later, renew_time=later, transitions=4)


@pytest.mark.parametrize(
    ("current", "transitions"),
    [(None, 0), (held_by("", transitions=2), 2)],
    ids=["created", "after-release"],
)
def test_taking_a_lease_nobody_held_is_no_transition(current: LeaseRecord | None, transitions: int) -> None:
    assert next_record(current, ME, T0, 15).transitions == transitions


def test_a_released_lease_names_no_holder_and_expires_at_once() -> None:
    later = T0 + timedelta(seconds=5)
    out = released(held_by(ME, transitions=1), later)
    assert (out.holder, out.lease_duration_seconds, out.renew_time, out.transitions) == ("", 1, later, 1)
    assert out.acquire_time == T0


def test_the_spec_round_trips_in_the_api_servers_microtime_format() -> None:
    spec = held_by(ME, transitions=2).to_spec()
    assert spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "leaseTransitions": 2,
        "acquireTime": "2026-01-02T03:04:05.678901Z",
        "renewTime": "2026-01-02T03:04:05.678901Z",
    }
    assert LeaseRecord.from_spec(spec) == held_by(ME, transitions=2)
    assert LeaseRecord.from_spec({}) == LeaseRecord("", 0)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(15.0, 15.0, 2.0), (15.0, 10.0, 10.0), (15.0, 10.0, 0.0)],
    ids=["deadline-not-before-expiry", "retry-not-before-deadline", "no-retry-period"],
)
def test_timing_that_could_let_two_leaders_overlap_is_refused(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        Timing(lease_duration=lease, renew_deadline=renew, retry_period=retry)


class MemoryLock:
    """A Lease kept in memory, with the API server's rule: a write must carry the resourceVersion last read."""

    def __init__(self) -> None:
        self.timeout = 1.0
        self.current: Observed | None = None
        self.version = 0
        self.failing = False

    def describe(self) -> str:
        return "Lease ns/lease"

    def _check(self) -> None:
        if self.failing:
            raise ConnectionError("the API server does not answer")

    def get(self, timeout: float | None = None) -> Observed | None:
        self._check()
        return self.current

    def _write(self, record: LeaseRecord) -> Observed:
        self.version += 1
        self.current = Observed(record, str(self.version))
        return self.current

    def create(self, record: LeaseRecord, timeout: float | None = None) -> Observed | None:
        self._check()
        return None if self.current is not None else self._write(record)

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float | None = None) -> Observed | None:
        self._check()
        if self.current is None or self.current.resource_version != resource_version:
            return None
        return self._write(record)


FAST = Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)


def elector(lock: MemoryLock, identity: str, lost: list[str] | None = None) -> LeaderElector:
    return LeaderElector(lock, identity, on_lost=(lost if lost is not None else []).append, timing=FAST)


def test_of_two_candidates_only_the_first_leads_and_the_other_takes_over_after_the_lease_expires() -> None:
    lock = MemoryLock()
    first, second = elector(lock, ME), elector(lock, OTHER)
    assert first.try_acquire_or_renew() and first.leading
    assert not second.try_acquire_or_renew() and not second.leading
    stop = threading.Event()
    timer = threading.Timer(5.0, stop.set)  # bounds the test if the takeover never happens
    timer.start()
    try:
        assert second.acquire(stop), "the follower takes over once the leader stops renewing"
    finally:
        timer.cancel()
    assert lock.current is not None and lock.current.record.holder == OTHER
    assert lock.current.record.transitions == 1
    with pytest.raises(LostLeadership, match=f"names {OTHER}"):
        first.try_acquire_or_renew()


def test_a_leader_that_cannot_renew_before_the_deadline_gives_up_the_lead() -> None:
    lock = MemoryLock()
    lost: list[str] = []
    leader = elector(lock, ME, lost)
    assert leader.try_acquire_or_renew()
    thread = leader.start_renewing()
    lock.failing = True
    thread.join(timeout=5.0)
    assert not thread.is_alive() and not leader.leading
    assert lost == ["Lease ns/lease: not renewed for 1 s"]


def test_a_leader_that_finds_another_holder_named_gives_up_the_lead_at_once() -> None:
    lock = MemoryLock()
    lost: list[str] = []
    leader = elector(lock, ME, lost)
    assert leader.try_acquire_or_renew()
    thread = leader.start_renewing()
    assert lock.current is not None
    lock._write(held_by(OTHER))
    thread.join(timeout=0.5)  # well before the 1 s renewal deadline
    assert not thread.is_alive()
    assert lost == [f"Lease ns/lease: the Lease names {OTHER}"]


def test_release_clears_the_holder_so_a_follower_leads_at_its_next_round() -> None:
    lock = MemoryLock()
    leader, follower = elector(lock, ME), elector(lock, OTHER)
    assert leader.try_acquire_or_renew()
    leader.start_renewing()
    assert not follower.try_acquire_or_renew()
    leader.release()
    assert lock.current is not None and lock.current.record.holder == ""
    assert follower.try_acquire_or_renew(), "no waiting out the lease duration"


def test_a_waiting_follower_answers_its_liveness_path_and_frees_the_port_when_stopped() -> None:
    import socket
    import urllib.error
    import urllib.request

    from tests.servers.processes import free_port

    port = free_port()
    health = FollowerHealth(f"http://127.0.0.1:{port}/healthz")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        health.stop()
    with socket.socket() as sock:  # kopf binds the same address next
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_a_liveness_url_without_a_port_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--liveness"):
        FollowerHealth("http://0.0.0.0/healthz")


def test_leader_election_outside_a_pod_without_a_lease_namespace_exits_2_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr("sil_operator.cli.SERVICE_ACCOUNT_NAMESPACE", Path("/nonexistent/namespace"))
    assert main(["operator", "--leader-elect", "--namespace", "a", "--namespace", "b"]) == 2
    assert "--leader-election-namespace" in capsys.readouterr().out

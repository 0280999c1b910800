"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection package does it.

With several operator replicas exactly one may act (create Jobs, patch status): two operators reconciling the same
loop would race each other. Neither ready-made option fits:

- kopf's peering is priority-based freezing, not an election: operators of equal priority all freeze, so replicas
  of one Deployment would serve nothing;
- `kubernetes.leaderelection` (the Python client) only locks on a ConfigMap annotation, writes without the
  resourceVersion (no optimistic concurrency), and formats times so other tools cannot read them.

So this module is a small client-go-compatible Lease lock. The rules:

- the Lease's `holderIdentity` names the leader (the pod name); every write carries the resourceVersion that was
  read, so of two candidates writing at once exactly one wins (the other gets 409 Conflict and stays a follower);
- a follower takes the Lease over only when it has seen no change to it for `leaseDurationSeconds`, measured on
  its own monotonic clock from when it saw the last change (never by comparing the leader's wall clock with its
  own: clocks of two nodes may disagree), or at once when the Lease holds no holder (released on shutdown);
- the leader renews every `retry_period`; a leader that has not renewed within `renew_deadline` of its last
  successful renewal, or that finds another holder named in the Lease, has lost: it stops acting at once (the
  operator exits, so its pod restarts as a follower). `renew_deadline` < `lease_duration`, and the deadline counts
  from when the last successful renewal was *sent*, so the old leader stops before any follower may take over.

The decisions (`decide`, `next_record`) are pure and table-tested; `LeaseLock` does the three API calls and
`LeaderElector` runs the rounds (blocking; the renewal runs in a daemon thread beside kopf's event loop).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("selfimprove.leader")

LEASE_API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class Timing:
    """client-go's defaults (as controller-runtime uses them), in seconds."""

    lease_duration: float = 15.0
    """How long a follower waits, from the last change it saw, before it may take the Lease over."""
    renew_deadline: float = 10.0
    """How long the leader may go without a successful renewal before it stops acting."""
    retry_period: float = 2.0
    """The pause between two attempts, for followers and the leader alike."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election timing: need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period}, {self.renew_deadline}, {self.lease_duration}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec: who holds it, for how long, since when."""

    holder: str
    """`holderIdentity`; empty when nobody holds it (released)."""
    lease_duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    @staticmethod
    def from_spec(spec: Mapping[str, Any]) -> LeaseRecord:
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = _format_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = _format_time(self.renew_time)
        return spec


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _format_time(value: datetime) -> str:
    """A MicroTime as the API server wants it: RFC 3339, microseconds, UTC, `Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Action(enum.Enum):
    CREATE = "create"
    """No Lease exists: create it naming ourselves."""
    TAKE = "take"
    """The Lease is free (no holder) or expired: write ourselves in as the new holder."""
    RENEW = "renew"
    """We hold it: write a fresh renewTime."""
    WAIT = "wait"
    """Another holder's Lease is still valid: stay a follower."""
    LOST = "lost"
    """We were leading, but the Lease is gone or names someone else: stop acting at once."""


def is_expired(record: LeaseRecord, observed_at: float, now: float) -> bool:
    """Whether `leaseDurationSeconds` have passed since this process saw the record change (monotonic seconds)."""
    return now >= observed_at + record.lease_duration_seconds


def decide(current: LeaseRecord | None, identity: str, *, leading: bool, observed_at: float, now: float) -> Action:
    """What one election round does, given the Lease as read (None: there is none) and our role.

    A Lease naming us while we are not leading is ours to renew: it is left by an earlier process with our identity
    (the same pod, restarted), which is no longer running.
    """
    if current is None:
        return Action.LOST if leading else Action.CREATE
    if current.holder == identity:
        return Action.RENEW
    if leading:
        return Action.LOST
    if not current.holder or is_expired(current, observed_at, now):
        return Action.TAKE
    return Action.WAIT


def next_record(current: LeaseRecord | None, identity: str, now: datetime, lease_duration: int) -> LeaseRecord:
    """The Lease spec to write for CREATE, TAKE or RENEW: a renewal keeps acquireTime, a new holder counts a
    transition."""
    if current is not None and current.holder == identity:
        return replace(
            current,
            lease_duration_seconds=lease_duration,
            acquire_time=current.acquire_time or now,
            renew_time=now,
        )
    transitions = 0 if current is None else current.transitions + (1 if current.holder else 0)
    return LeaseRecord(identity, lease_duration, acquire_time=now, renew_time=now, transitions=transitions)


def released(current: LeaseRecord, now: datetime) -> LeaseRecord:
    """What a leader that shuts down writes: no holder, so a follower takes over at its next round (as client-go's
    ReleaseOnCancel does), instead of waiting out the lease duration."""
    return replace(current, holder="", lease_duration_seconds=1, renew_time=now)


@dataclass(frozen=True)
class Observed:
    """A Lease as read from the API server: its spec and the resourceVersion to write against."""

    record: LeaseRecord
    resource_version: str


class Lock(Protocol):
    """What the elector needs of a Lease: LeaseLock on the API server (tests may keep one in memory)."""

    timeout: float

    def describe(self) -> str: ...

    def get(self, timeout: float | None = None) -> Observed | None: ...

    def create(self, record: LeaseRecord, timeout: float | None = None) -> Observed | None: ...

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float | None = None) -> Observed | None: ...


class LeaseLock:
    """The three calls on one Lease: get, create, replace (with the resourceVersion read: optimistic concurrency).

    `create` and `replace` return None when another writer got there first (409); every call is bounded by
    `timeout` seconds, so a hanging API server cannot hold up the renewal deadline.
    """

    def __init__(self, api_client: Any, namespace: str, name: str, timeout: float = 5.0) -> None:
        from kubernetes import client

        self._client = api_client
        self._api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _observed(self, lease: Any) -> Observed:
        body = self._client.sanitize_for_serialization(lease)
        return Observed(LeaseRecord.from_spec(body.get("spec") or {}), body["metadata"]["resourceVersion"])

    def _body(self, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata, "spec": record.to_spec()}

    def get(self, timeout: float | None = None) -> Observed | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout or self.timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return self._observed(lease)

    def create(self, record: LeaseRecord, timeout: float | None = None) -> Observed | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.create_namespaced_lease(
                self.namespace, self._body(record, None), _request_timeout=timeout or self.timeout
            )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return self._observed(lease)

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float | None = None) -> Observed | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(record, resource_version),
                _request_timeout=timeout or self.timeout,
            )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return self._observed(lease)


class LostLeadership(Exception):
    """Raised inside the renewal thread's round; `on_lost` receives its message."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Runs election rounds on a LeaseLock for one identity: `acquire` blocks until leading, `start_renewing` keeps
    the lead in a daemon thread and calls `on_lost` (once) when it is lost, `release` hands it over on shutdown."""

    def __init__(
        self,
        lock: Lock,
        identity: str,
        on_lost: Callable[[str], None],
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.lock = lock
        self.identity = identity
        self.timing = timing or Timing()
        self._on_lost = on_lost
        self._clock = clock
        self._wall_clock = wall_clock
        self._observed: Observed | None = None
        self._observed_at = 0.0
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._leading

    def _remember(self, observed: Observed, now: float) -> None:
        if self._observed is None or observed.resource_version != self._observed.resource_version:
            before = self._observed.record.holder if self._observed else None
            after = observed.record.holder
            if after != before and after != self.identity:
                log.info("%s is held by %s", self.lock.describe(), after or "nobody (released)")
            self._observed = observed
            self._observed_at = now

    def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """One attempt to acquire or renew; True when this process holds the Lease afterwards.

        Each of its (at most two) API calls is bounded by `timeout` seconds (default: the lock's). Raises
        LostLeadership when leading and the Lease is gone or names another holder.
        """
        now = self._clock()
        current = self.lock.get(timeout)
        if current is not None:
            self._remember(current, now)
        record = None if current is None else current.record
        action = decide(record, self.identity, leading=self._leading, observed_at=self._observed_at, now=now)
        if action is Action.WAIT:
            return False
        if action is Action.LOST:
            holder = "no Lease exists" if record is None else f"the Lease names {record.holder or 'no holder'}"
            raise LostLeadership(f"{self.lock.describe()}: {holder}")
        wanted = next_record(record, self.identity, self._wall_clock(), round(self.timing.lease_duration))
        if current is None:
            written = self.lock.create(wanted, timeout)
        else:
            written = self.lock.replace(wanted, current.resource_version, timeout)
        if written is None:  # another candidate wrote first; the next round reads what it wrote
            return False
        self._observed, self._observed_at = written, now
        if not self._leading:
            log.info(
                "%s: %s is now the leader (transition %d)",
                self.lock.describe(),
                self.identity,
                written.record.transitions,
            )
        self._leading = True
        return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Blocks until this process leads (True), or `stop` is set (False). API errors are logged and retried."""
        log.info("%s: %s is waiting to become the leader", self.lock.describe(), self.identity)
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    return True
            except Exception as error:  # an unreachable API server: keep trying, as a follower has nothing to lose
                log.warning("%s: election round failed: %s", self.lock.describe(), error)
            stop.wait(self.timing.retry_period)
        return False

    def start_renewing(self) -> threading.Thread:
        """Renews every retry period from a daemon thread, until `release` or until the lead is lost."""
        self._thread = threading.Thread(target=self._renew_loop, name="leader-election", daemon=True)
        self._thread.start()
        return self._thread

    def _renew_loop(self) -> None:
        last_renewed = self._clock()
        while not self._stop.is_set():
            started = self._clock()
            # Both calls of the round together end by the deadline, so a hanging API server cannot keep a leader
            # acting past it.
            budget = max(0.1, (self.timing.renew_deadline - (started - last_renewed)) / 2)
            try:
                if self.try_acquire_or_renew(timeout=min(budget, self.lock.timeout)):
                    last_renewed = started
            except LostLeadership as lost:
                self._lose(str(lost))
                return
            except Exception as error:
                log.warning("%s: renewal failed: %s", self.lock.describe(), error)
            if self._clock() - last_renewed >= self.timing.renew_deadline:
                self._lose(f"{self.lock.describe()}: not renewed for {self.timing.renew_deadline:g} s")
                return
            remaining = self.timing.renew_deadline - (self._clock() - last_renewed)
            self._stop.wait(max(0.0, min(self.timing.retry_period, remaining)))

    def _lose(self, reason: str) -> None:
        self._leading = False
        if not self._stop.is_set():
            self._on_lost(reason)

    def release(self) -> None:
        """Stops renewing and, when the Lease still names us, clears its holder so a follower takes over at once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timing.retry_period + self.lock.timeout)
        if not self._leading:
            return
        self._leading = False
        try:
            current = self.lock.get()
            if current is not None and current.record.holder == self.identity:
                self.lock.replace(released(current.record, self._wall_clock()), current.resource_version)
                log.info("%s: %s released the lead", self.lock.describe(), self.identity)
        except Exception as error:  # the followers then wait out the lease duration instead
            log.warning("%s: could not release: %s", self.lock.describe(), error)


def api_client_from_environment() -> Any:
    """An ApiClient of its own for the election (in-cluster config, else $KUBECONFIG / ~/.kube/config): the
    renewal thread then shares no connection pool or global configuration with kopf's client."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class FollowerHealth:
    """The liveness endpoint of a process waiting to lead: kopf serves `--liveness` only once it runs, and a
    follower's probe must not fail (the kubelet would restart followers forever). Stopped before kopf starts, which
    then serves the same address."""

    def __init__(self, url: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "http" or parts.port is None:
            raise ValueError(f"--liveness: expected http://HOST:PORT/PATH, got {url!r}")
        path = parts.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path.split("?", 1)[0] == path
                body = b'{"leader": false}\n' if found else b"not found\n"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json" if found else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a line
                pass

        self._server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="follower-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

"""The loops' Jobs (and JobSets, read as Jobs) as the operator's watches delivered them: a per-loop cache.

A reconcile used to GET its loop and LIST its Jobs on every wake, ~8 requests of 0.1-1 s each per transition on a
loaded API server (bench/scale.py). kopf already watches every Job and JobSet the operator manages
(handlers.job_changed, handlers.stage_jobset_changed); this cache keeps what those watches delivered, by loop, so
a reconcile reads nothing. It answers, like an informer's store, only once it is complete for a loop ("primed",
as an informer's HasSynced): a loop is primed by one authoritative LIST (`replace`), after which the watch keeps it.

When a loop is (re)primed by a LIST:
- on its first reconcile after the operator starts (the watch may still be streaming its initial listing);
- after kopf relisted (a watch whose resourceVersion expired, 410 Gone, restarts from a LIST): Jobs deleted while
  no watch was open send no DELETED event, so every loop is listed again. A relist shows as a second listing
  event (kopf's type None) for a Job already seen; `seen` then unprimes every loop;
- on the resync period (handlers.run_loop), counted from the loop's last LIST whatever woke the loop since, which
  bounds how long a stale entry can stay in the cache: a Job deleted during a relist that showed no surviving Job
  (so no second listing event), or an event lost across an API server restart (seen once in the long chaos run:
  a loop requeued every 20 s for a stage being diagnosed never reached the old, idle-only resync).

A LIST and the watch race: events that arrive while a LIST is in flight are newer than it or as new, so `replace`
keeps what the watch said since the LIST started (updates and deletions, by a sequence number) over the LIST's
items. Older events than the cached body (a resourceVersion below it) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LoopKey = tuple[str, str]
"""(namespace, loop name)."""


def resource_version(body: Mapping[str, Any]) -> int | None:
    """The object's resourceVersion as a number, None when it is not one. The API says resourceVersions are opaque,
    but the API server's (etcd's revision) are increasing integers; where one is not, every event is taken."""
    raw = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else None


@dataclass
class _Entry:
    seq: int
    """The cache's counter when this entry was written: compared with a LIST's start in `replace`."""
    body: dict[str, Any] | None
    """None: a tombstone (deleted since the loop was last listed)."""


@dataclass
class WatchedJobs:
    """Per loop, the Jobs by uid; JobSets are stored as `jobset.as_job` reads them, under their own uid."""

    _loops: dict[LoopKey, dict[str, _Entry]] = field(default_factory=dict)
    _primed: set[LoopKey] = field(default_factory=set)
    _listed: set[str] = field(default_factory=set)
    """Uids delivered at least once by a watch: a listing event (type None) for one of them is a relist."""
    _seq: int = 0
    relists: int = 0
    """Relists noticed (each unprimed every loop): for tests and logs."""

    def seen(self, event_type: str | None, loop: LoopKey, uid: str, body: Mapping[str, Any]) -> bool:
        """One watch event of a Job (or a JobSet as a Job) labelled for `loop`. kopf's event types: None for an
        object of a (re)listing, ADDED, MODIFIED, DELETED. True when it shows a relist that unprimed every loop
        (the caller wakes them all: a loop whose Jobs were all deleted meanwhile gets no event of its own)."""
        relisted = event_type is None and uid in self._listed and bool(self._primed)
        if relisted:
            self.relists += 1
            self._primed.clear()
        if event_type == "DELETED":
            self._listed.discard(uid)
        else:
            self._listed.add(uid)
        if event_type == "DELETED" and loop not in self._loops:
            return relisted  # a forgotten loop's Job (the watch delivers every object before its deletion)
        entries = self._loops.setdefault(loop, {})
        current = entries.get(uid)
        if current is not None and current.body is not None and event_type != "DELETED":
            old, new = resource_version(current.body), resource_version(body)
            if old is not None and new is not None and new < old:
                return relisted  # an event older than what a LIST already gave
        self._seq += 1
        entries[uid] = _Entry(self._seq, None if event_type == "DELETED" else dict(body))
        return relisted

    def jobs(self, loop: LoopKey) -> list[dict[str, Any]] | None:
        """The loop's Jobs, None when the cache is not primed for it (a reconcile must LIST first)."""
        if loop not in self._primed:
            return None
        return [entry.body for entry in self._loops.get(loop, {}).values() if entry.body is not None]

    def mark(self) -> int:
        """The counter before a LIST: pass it to `replace` with the LIST's items."""
        return self._seq

    def replace(self, loop: LoopKey, listed: list[dict[str, Any]], since: int) -> list[dict[str, Any]]:
        """The loop's Jobs are what a LIST started at `since` returned, except for what the watch said after it
        started; the loop is primed. Returns its Jobs."""
        before = self._loops.get(loop, {})
        entries = {uid: entry for uid, entry in before.items() if entry.seq > since}
        for job in listed:
            uid = str((job.get("metadata") or {}).get("uid") or "")
            if uid and uid not in entries:
                entries[uid] = _Entry(since, job)
        self._loops[loop] = entries
        self._primed.add(loop)
        return [entry.body for entry in entries.values() if entry.body is not None]

    def unprime(self, loop: LoopKey) -> None:
        """The loop's next reconcile lists its Jobs again (the resync period)."""
        self._primed.discard(loop)

    def forget(self, loop: LoopKey) -> None:
        """A deleted loop: its entries go (its Jobs' DELETED events, if any come, find nothing)."""
        for uid in self._loops.pop(loop, {}):
            self._listed.discard(uid)
        self._primed.discard(loop)

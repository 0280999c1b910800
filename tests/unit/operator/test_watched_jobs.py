"""The operator reads a loop's Jobs from what its watches delivered (kube/watched.py), not a LIST per reconcile.
The cache must be as right as the LIST it replaces: complete before a reconcile acts on it, without Jobs deleted
behind the operator's back (DELETED events, and a relist after a watch expired), and never older than a LIST."""

from __future__ import annotations

from typing import Any

from sil_operator.kube.controller import _freshest
from sil_operator.kube.watched import WatchedJobs

LOOP = ("ml", "demo")


def job(name: str, version: int, *, uid: str | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": uid or f"uid-{name}", "resourceVersion": str(version)},
        "status": status,
    }


def names(jobs: list[dict[str, Any]] | None) -> list[str]:
    assert jobs is not None
    return sorted(j["metadata"]["name"] for j in jobs)


def test_a_loop_is_not_answered_until_a_list_primed_it_then_the_watch_keeps_it() -> None:
    watched = WatchedJobs()
    watched.seen(None, LOOP, "uid-a", job("a", 5))  # the watch's initial listing, maybe not complete
    assert watched.jobs(LOOP) is None, "a reconcile must not act on a cache that has not seen a whole listing"
    since = watched.mark()
    assert names(watched.replace(LOOP, [job("a", 5), job("b", 6)], since)) == ["a", "b"]
    watched.seen("ADDED", LOOP, "uid-c", job("c", 7))
    watched.seen("MODIFIED", LOOP, "uid-a", job("a", 8, succeeded=1))
    jobs = watched.jobs(LOOP)
    assert names(jobs) == ["a", "b", "c"]
    assert jobs is not None and next(j for j in jobs if j["metadata"]["name"] == "a")["status"] == {"succeeded": 1}
    assert watched.jobs(("ml", "other")) is None


def test_a_job_deleted_behind_the_operators_back_leaves_the_cache() -> None:
    watched = WatchedJobs()
    watched.replace(LOOP, [job("a", 5), job("b", 6)], watched.mark())
    watched.seen("DELETED", LOOP, "uid-a", job("a", 9))
    assert names(watched.jobs(LOOP)) == ["b"]
    watched.seen("ADDED", LOOP, "uid-a2", job("a", 10, uid="uid-a2"))  # recreated under the same name
    assert names(watched.jobs(LOOP)) == ["a", "b"]


def test_events_during_a_list_win_over_the_list_and_older_events_are_ignored() -> None:
    watched = WatchedJobs()
    watched.seen("ADDED", LOOP, "uid-a", job("a", 5))
    watched.seen("ADDED", LOOP, "uid-b", job("b", 6))
    since = watched.mark()  # the LIST starts; meanwhile the watch sees b deleted and c created
    watched.seen("DELETED", LOOP, "uid-b", job("b", 11))
    watched.seen("ADDED", LOOP, "uid-c", job("c", 12))
    listed = [job("a", 10, succeeded=1), job("b", 6)]  # answered before the deletion reached it
    assert names(watched.replace(LOOP, listed, since)) == ["a", "c"]
    watched.seen("MODIFIED", LOOP, "uid-a", job("a", 7))  # a late event older than the LIST's a
    jobs = watched.jobs(LOOP)
    assert jobs is not None and next(j for j in jobs if j["metadata"]["name"] == "a")["status"] == {"succeeded": 1}


def test_a_relist_after_the_watch_expired_makes_every_loop_list_again() -> None:
    """kopf relists on 410 Gone: Jobs deleted while no watch was open send no DELETED. A second listing event for
    a Job already seen is that relist; every loop lists again before it is answered from the cache."""
    watched = WatchedJobs()
    other = ("ml", "other")
    watched.seen(None, LOOP, "uid-a", job("a", 5))  # startup listing: one listing event per Job
    watched.seen(None, LOOP, "uid-b", job("b", 6))
    watched.replace(LOOP, [job("a", 5), job("b", 6)], watched.mark())
    watched.replace(other, [], watched.mark())
    assert watched.relists == 0
    assert watched.seen(None, LOOP, "uid-a", job("a", 5)), "the relist shows a again; b was deleted meanwhile"
    assert not watched.seen(None, LOOP, "uid-a", job("a", 5)), "one relist wakes the loops once"
    assert watched.relists == 1
    assert watched.jobs(LOOP) is None and watched.jobs(other) is None
    assert names(watched.replace(LOOP, [job("a", 5)], watched.mark())) == ["a"]


def test_the_resync_period_and_a_forgotten_loop_list_again() -> None:
    watched = WatchedJobs()
    watched.replace(LOOP, [job("a", 5)], watched.mark())
    watched.unprime(LOOP)
    assert watched.jobs(LOOP) is None
    watched.replace(LOOP, [job("a", 5)], watched.mark())
    watched.forget(LOOP)
    assert watched.jobs(LOOP) is None
    watched.seen("DELETED", LOOP, "uid-a", job("a", 9))  # the garbage collector's deletion of its Job
    assert watched.replace(LOOP, [], watched.mark()) == []


def loop_body(version: str, uid: str = "loop-uid", phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": version}, "status": {"phase": phase}}


def test_a_reconcile_plans_from_the_operators_own_write_until_the_watch_delivers_it() -> None:
    """Woken by the Job it just created, a reconcile must not plan from the status before its own patch (it would
    post the same events again): the newer of the watched loop and the patch's answer, by resourceVersion."""
    watched, written = loop_body("10", phase="Pending"), loop_body("11")
    assert _freshest(watched, None) is watched
    assert _freshest(watched, written) is written
    assert _freshest(loop_body("12"), written)["metadata"]["resourceVersion"] == "12"  # type: ignore[index]
    assert _freshest(loop_body("5", uid="new"), written)["metadata"]["uid"] == "new"  # type: ignore[index]
    assert _freshest(loop_body("x"), written) is None, "versions that cannot be ordered: read the loop"

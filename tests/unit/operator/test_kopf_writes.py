"""kopf's diff-base is an empty constant (kube/persistence.py): right only while the operator registers no change
handler (on.create/update/resume/delete/field) and no timer, which would read it. This fails when one is added."""

from __future__ import annotations

import kopf

from sil_operator.kube import handlers
from sil_operator.kube.persistence import NoDiffBase


def test_no_registered_handler_reads_kopfs_diff_base() -> None:
    registry = kopf.get_default_registry()
    assert handlers.run_loop is not None  # the registrations are imported
    assert list(registry._changing.get_all_handlers()) == []
    spawning = list(registry._spawning.get_all_handlers())
    assert [type(h).__name__ for h in spawning] == ["DaemonHandler"], "a timer would read the diff-base's idle reset"
    assert [h.fn for h in spawning] == [handlers.run_loop]


def test_the_empty_diff_base_sees_no_change() -> None:
    storage = NoDiffBase()
    body = kopf.Body({"metadata": {"name": "demo"}, "spec": {"maxIterations": 2}})
    assert storage.fetch(body=body) == storage.build(body=body) == {}

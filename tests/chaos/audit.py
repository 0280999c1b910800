"""Every Job created in a namespace, from the start, through API server restarts: name -> uids, and a callback
when a stage Job completes.

A watch breaks when kube-apiserver restarts; the audit then lists again (a Job created in the gap shows up in the
list with a uid not seen yet) and watches on from the list. Jobs are never deleted during a chaos run (their loops
stay), so list + watch sees every creation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LABEL_STAGE = "selfimprove.dev/stage"
LABEL_LOOP = "selfimprove.dev/loop"
LABEL_ITERATION = "selfimprove.dev/iteration"

Completed = Callable[[str, int, str], None]
"""on_complete(loop, iteration, stage), called once per completed stage Job."""


class JobAudit:
    """Records Job creations (name -> uids, in order of first sight) and calls `on_complete` for completed Jobs."""

    def __init__(self, kubeconfig: Path, namespace: str, on_complete: Completed | None = None) -> None:
        from kubernetes import client, config

        self._batch = client.BatchV1Api(config.new_client_from_config(str(kubeconfig)))
        self._namespace = namespace
        self._on_complete = on_complete
        self._lock = threading.Lock()
        self.created: dict[str, list[str]] = {}
        self.creations = 0
        self.relists = 0
        self._completed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="job-audit")
        self._thread.start()

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: list(uids) for name, uids in self.created.items()}

    def stop(self) -> None:
        self._stop.set()

    def _see(self, job: Any) -> None:
        meta = job.metadata
        with self._lock:
            uids = self.created.setdefault(meta.name, [])
            if meta.uid not in uids:
                uids.append(meta.uid)
                self.creations += 1
            complete = any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or []))
            first = complete and meta.uid not in self._completed
            if first:
                self._completed.add(meta.uid)
        if first and self._on_complete is not None:
            labels = meta.labels or {}
            self._on_complete(labels.get(LABEL_LOOP, ""), int(labels.get(LABEL_ITERATION, "0")), labels[LABEL_STAGE])

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                listed = self._batch.list_namespaced_job(self._namespace, label_selector=LABEL_STAGE)
                for job in listed.items:
                    self._see(job)
                stream = watch.Watch().stream(
                    self._batch.list_namespaced_job,
                    self._namespace,
                    label_selector=LABEL_STAGE,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._see(event["object"])
            except Exception:  # a broken watch (API server restart): list again
                with self._lock:
                    self.relists += 1
                time.sleep(0.3)

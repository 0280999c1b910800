"""Watches stage Jobs and writes each stage's outputs before kwok completes its pod.

kwok's nodes run nothing: a Job's pod goes Running at once and Succeeded after its `kwok.selfimprove.dev/run-ms`.
The operator counts a Job that completes without its stage's manifest as a failed attempt, so the outputs must be
in the store before then: the writer starts on the Job's ADDED event (the operator creates the Job's ConfigMap
first, so the stage config is there), and loops give their pods a run time that covers the write (RUN_MS).

It survives the chaos the suite makes: a broken watch (kube-apiserver restart) lists and watches again, a store
or Pushgateway outage is retried until the write succeeds, the Job completes or RETRY_SECONDS pass. Each Job
(by uid) is handled once per writer; a writer started again skips stages whose manifest is already there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sil_stages.core.contract import StorageOptions, parse_stage_config
from sil_stages.core.store import Store, StoreError, StoreTimeouts
from tests.fakestages.outputs import AnyConfig, write_stage

log = logging.getLogger("fakestages")

LABEL_STAGE = "selfimprove.dev/stage"
"""The label every stage Job carries (sil_operator.kube.objects.LABEL_STAGE)."""
CONFIG_KEY = "config.json"
"""The ConfigMap key holding the StageConfig (sil_operator.kube.objects.CONFIG_KEY)."""
READY = "ready: watching stage Jobs"
RUN_MS = 1500
"""The pod run time (`kwok.selfimprove.dev/run-ms`) that covers a write on a loaded 2-core machine."""
RETRY_SECONDS = 300.0
"""How long one stage's write is retried through outages before the writer gives up on it."""
WATCH_SECONDS = 60
"""Server-side timeout of one watch request; the writer then lists and watches again."""
TIMEOUTS = StoreTimeouts(connect_seconds=2.0, read_seconds=10.0, attempts=2, transfer_attempts=1)
"""Short store timeouts: the writer retries whole stages itself, so one attempt must fail fast when S3 is down."""


def pod_annotations(run_ms: int = RUN_MS) -> dict[str, str]:
    """The loop's `spec.runtime.podAnnotations` for kwok pods that run long enough for the writer."""
    return {"kwok.selfimprove.dev/run-ms": str(run_ms)}


def _finished(job: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in (job.status.conditions or []))


class FakeStageWriter:
    """Writes the outputs of every stage Job in `namespaces` (None: all namespaces) to the store the stage config
    names, with scores from `tests.fakestages.scores` under `seed`.

    Credentials for S3 come from the environment (AWS_ACCESS_KEY_ID, ...), as a stage pod gets them from the
    loop's credentials Secret. `start()` runs it in background threads, `stop()` ends them; `written` counts the
    stages written and `errors` the failed attempts (each retried)."""

    def __init__(self, kubeconfig: Path, namespaces: Sequence[str] | None = None, seed: int = 0) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(str(kubeconfig))
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self._seed = seed
        self._stores: dict[tuple[str | None, str | None], Store] = {}
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fakestage")
        self._threads: list[threading.Thread] = []
        self.written = 0
        self.errors = 0

    def start(self) -> None:
        """Loads what the first write needs (boto3's S3 model: seconds on a loaded 2-core machine, longer than a
        kwok pod runs), starts the watches, then logs READY, which `running_fake_stages` waits for."""
        import boto3

        boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
        for namespace in self._namespaces:
            thread = threading.Thread(target=self._watch, args=(namespace,), daemon=True, name=f"watch-{namespace}")
            thread.start()
            self._threads.append(thread)
        log.info(READY)

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_forever(self) -> None:
        self.start()
        self._stop.wait()

    # -- watching ---------------------------------------------------------------------------------------------
    def _list(self, namespace: str | None, **kwargs: Any) -> Any:
        if namespace is None:
            return self._batch.list_job_for_all_namespaces(label_selector=LABEL_STAGE, **kwargs)
        return self._batch.list_namespaced_job(namespace, label_selector=LABEL_STAGE, **kwargs)

    def _stream(self, namespace: str | None, resource_version: str) -> Any:
        """Job events from `resource_version` on. The client's own list methods go in (not a wrapper): the watch
        reads their docstring to know what to deserialize the events into, and hands out plain dicts otherwise."""
        from kubernetes import watch

        kwargs: dict[str, Any] = {
            "label_selector": LABEL_STAGE,
            "resource_version": resource_version,
            "timeout_seconds": WATCH_SECONDS,
        }
        if namespace is None:
            return watch.Watch().stream(self._batch.list_job_for_all_namespaces, **kwargs)
        return watch.Watch().stream(self._batch.list_namespaced_job, namespace, **kwargs)

    def _watch(self, namespace: str | None) -> None:
        """List (handling what exists), then watch from there; any break (410, a restarted API server) starts over."""
        while not self._stop.is_set():
            try:
                listed = self._list(namespace)
                for job in listed.items:
                    self._offer(job)
                for event in self._stream(namespace, listed.metadata.resource_version):
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._offer(event["object"])
            except Exception as error:  # any broken watch is retried; the writer must outlive it
                if not self._stop.is_set():
                    log.info("watch of %s broke (%s); listing again", namespace or "all namespaces", error)
                    self._stop.wait(0.5)

    def _offer(self, job: Any) -> None:
        uid = job.metadata.uid
        with self._lock:
            if uid in self._seen or _finished(job):
                return
            self._seen.add(uid)
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the writer is stopping
            self._pool.submit(self._handle, job.metadata.namespace, job.metadata.name)

    # -- writing ----------------------------------------------------------------------------------------------
    def _store(self, storage: StorageOptions) -> Store:
        key = (storage.endpoint, storage.region)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = Store(storage, TIMEOUTS)
            return self._stores[key]

    def _config(self, namespace: str, name: str) -> AnyConfig | None:
        from kubernetes.client.exceptions import ApiException

        try:
            configmap = self._core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return parse_stage_config((configmap.data or {})[CONFIG_KEY])

    def _job_done(self, namespace: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            job = self._batch.read_namespaced_job(name, namespace)
            return _finished(job)
        except ApiException as error:
            return bool(error.status == 404)

    def _handle(self, namespace: str, name: str) -> None:
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.2
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                config = self._config(namespace, name)
                if config is None:
                    log.info("%s/%s: no stage ConfigMap; nothing to write", namespace, name)
                    return
                manifest = write_stage(self._store(config.storage), config, self._seed)
            except (StoreError, ConnectionError, OSError) as error:
                with self._lock:
                    self.errors += 1
                log.info("%s/%s: write failed (%s); retrying", namespace, name, error)
            except Exception as error:  # an API server that is restarting; retried like the rest
                with self._lock:
                    self.errors += 1
                log.info("%s/%s: %s: %s; retrying", namespace, name, type(error).__name__, error)
            else:
                what = "already finished" if manifest is None else f"written in {time.monotonic() - started:.2f} s"
                if manifest is not None:
                    with self._lock:
                        self.written += 1
                log.info("%s/%s: iteration %d %s %s", namespace, name, config.iteration, config.stage, what)
                return
            if self._job_done_quietly(namespace, name):
                log.info("%s/%s: the Job ended before its outputs could be written", namespace, name)
                return
            self._stop.wait(pause)
            pause = min(pause * 2, 2.0)
        log.warning("%s/%s: gave up writing its outputs", namespace, name)

    def _job_done_quietly(self, namespace: str, name: str) -> bool:
        try:
            return self._job_done(namespace, name)
        except Exception:  # the API server may be the thing that is down
            return False

"""The operator under failure, on a real control plane: a store that never answers stalls nothing else, and every
failure is visible on its loop (a condition with a reason, a Warning event) with a bounded retry.

Stage Jobs run on kwok's fake GPU nodes (see test_operator.py): they complete without writing anything.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import apply, events, get_loop, kwok_loop, phase
from tests.servers.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """An HTTP endpoint on 127.0.0.1 that accepts every connection and never answers: `http://127.0.0.1:<port>`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stopped = threading.Event()

    def accept() -> None:
        while not stopped.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stopped.set()
        server.close()
        for connection in held:
            connection.close()


class HealthProbe:
    """Polls the operator's /healthz every 0.2 s and keeps the slowest answer (a timeout counts as 5 s)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _probe(self) -> float:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                response.read()
        except OSError:
            return 5.0
        return time.monotonic() - started

    def start(self) -> None:
        wait_until(lambda: self._probe() < 5.0, 60, f"the operator's health endpoint {self.url}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.latencies.append(self._probe())
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def condition(plane: ControlPlane, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    conditions = (get_loop(plane, namespace, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def is_condition(plane: ControlPlane, namespace: str, name: str, kind: str, status: str, reason: str) -> bool:
    found = condition(plane, namespace, name, kind)
    return found is not None and (found["status"], found["reason"]) == (status, reason)


def event_reasons(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(plane, namespace, name)]


def create_secret(plane: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    apply(
        plane,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        },
    )


def test_a_store_that_never_answers_stalls_neither_other_loops_nor_the_health_endpoint(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    health = f"http://127.0.0.1:{free_port()}/healthz"
    credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # so boto3 sends its requests
    with (
        blackhole() as endpoint,
        running_operator(
            control_plane, namespace, tmp_path / "operator.log", credentials, ["--liveness", health]
        ) as operator,
    ):
        probe = HealthProbe(health)
        probe.start()
        try:
            stuck = kwok_loop(namespace, "stuck", tmp_path / "unused", maxIterations=1)
            stuck["spec"]["storage"] = {"uri": "s3://bucket/loops/stuck", "endpoint": endpoint}
            apply(control_plane, stuck)
            wait_until(
                lambda: any(
                    j["metadata"]["name"] == "stuck-1-acquire" and (j.get("status") or {}).get("succeeded")
                    for j in control_plane.get_json("jobs", "-n", namespace)["items"]
                ),
                60,
                "the stuck loop's first Job to finish (its manifest is then read from the silent store)",
            )
            apply(control_plane, kwok_loop(namespace, "healthy", tmp_path / "store", maxIterations=1))
            wait_until(
                lambda: phase(control_plane, namespace, "healthy") == "Succeeded",
                90,
                "the healthy loop to walk every stage while the other loop's store hangs\n" + operator.log()[-3000:],
            )
            wait_until(
                lambda: is_condition(control_plane, namespace, "stuck", "Degraded", "True", "StoreError"),
                120,
                "the stuck loop to show its store error\n" + operator.log()[-3000:],
            )
        finally:
            probe.stop()
    degraded = condition(control_plane, namespace, "stuck", "Degraded")
    assert degraded is not None
    assert "s3://bucket/loops/stuck/iterations/1/acquire/_manifest.json" in degraded["message"]
    assert "spec.storage.endpoint" in degraded["message"]
    assert "StoreError" in event_reasons(control_plane, namespace, "stuck")
    assert phase(control_plane, namespace, "stuck") == "Running", "a store error is retried, not the end"
    assert len(probe.latencies) > 20
    assert max(probe.latencies) < 1.0, sorted(probe.latencies)[-5:]


def test_a_loop_without_any_stage_image_fails_naming_spec_runtime_image_and_runs_once_it_is_set(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with running_operator(control_plane, namespace, tmp_path / "operator.log", {"SIL_STAGE_IMAGE": ""}):
        apply(control_plane, kwok_loop(namespace, "noimage", tmp_path / "store", maxIterations=1))
        wait_until(lambda: phase(control_plane, namespace, "noimage") == "Failed", 60, "the loop to fail")
        status = get_loop(control_plane, namespace, "noimage")["status"]
        failed = condition(control_plane, namespace, "noimage", "Failed")
        assert failed is not None and failed["reason"] == "StageImageMissing"
        assert "spec.runtime.image" in failed["message"] and "spec.runtime.image" in status["message"]
        assert "StageImageMissing" in event_reasons(control_plane, namespace, "noimage")
        assert control_plane.get_json("jobs", "-n", namespace)["items"] == [], "no Job without an image"

        control_plane.kubectl(
            "patch", "sil", "noimage", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"runtime":{"image":"selfimprove/stage:test"}}}',
        )  # fmt: skip
        wait_until(lambda: phase(control_plane, namespace, "noimage") == "Succeeded", 90, "the fixed loop to run")
    assert is_condition(control_plane, namespace, "noimage", "Degraded", "False", "Recovered")


def test_a_missing_prometheus_token_secret_is_shown_and_heals_when_the_secret_is_created(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    document = kwok_loop(namespace, "token", tmp_path / "store", maxIterations=1)
    document["spec"]["promotion"] = {
        "prometheus": {
            "address": f"http://127.0.0.1:{free_port()}",  # nothing listens: queries are Errors, later
            "bearerTokenSecret": {"name": "prometheus-token", "key": "token"},
        },
        "gates": [
            {
                "name": "improves",
                "query": 'selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",model="{{model}}"}',
                "successCondition": "result >= champion",
                "consecutiveErrorLimit": 0,
            }
        ],
    }
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, document)
        wait_until(
            lambda: is_condition(control_plane, namespace, "token", "Degraded", "True", "SecretUnavailable"),
            90,
            "the missing Secret to show on the loop\n" + operator.log()[-3000:],
        )
        degraded = condition(control_plane, namespace, "token", "Degraded")
        assert degraded is not None
        assert "promotion.prometheus.bearerTokenSecret" in degraded["message"]
        assert f"{namespace}/prometheus-token" in degraded["message"]
        time.sleep(6)  # a few retries: the event is posted once, on the transition
        assert event_reasons(control_plane, namespace, "token").count("SecretUnavailable") == 1
        assert phase(control_plane, namespace, "token") == "Running"

        create_secret(control_plane, namespace, "prometheus-token", {"token": "s3cr3t"})
        wait_until(
            lambda: is_condition(control_plane, namespace, "token", "Degraded", "False", "Recovered"),
            90,
            "the loop to heal once the Secret exists\n" + operator.log()[-3000:],
        )
        wait_until(lambda: phase(control_plane, namespace, "token") == "Succeeded", 60, "the loop to finish")
    gate = get_loop(control_plane, namespace, "token")["status"]["iterations"][0]["gates"][0]
    assert gate["phase"] == "Error", "measured after the Secret appeared (Prometheus itself is not there)"
    assert "Recovered" in event_reasons(control_plane, namespace, "token")


def test_a_missing_storage_credentials_secret_starts_no_job_until_it_exists(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    document = kwok_loop(namespace, "creds", tmp_path / "store", maxIterations=1)
    document["spec"]["storage"]["credentialsSecret"] = "s3-credentials"
    with running_operator(control_plane, namespace, tmp_path / "operator.log"):
        apply(control_plane, document)
        wait_until(
            lambda: is_condition(control_plane, namespace, "creds", "Degraded", "True", "SecretUnavailable"),
            60,
            "the missing Secret to show on the loop",
        )
        degraded = condition(control_plane, namespace, "creds", "Degraded")
        assert degraded is not None and "spec.storage.credentialsSecret" in degraded["message"]
        assert control_plane.get_json("jobs", "-n", namespace)["items"] == []
        create_secret(
            control_plane, namespace, "s3-credentials", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
        )
        wait_until(lambda: phase(control_plane, namespace, "creds") == "Succeeded", 90, "the loop to run")
    assert is_condition(control_plane, namespace, "creds", "Degraded", "False", "Recovered")

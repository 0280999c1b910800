"""Loops on kwok with S3 and Prometheus gates, while the operator is SIGKILLed again and again, SeaweedFS dies in
promotion windows, Prometheus goes away during gate measurements and kube-apiserver restarts.

Undisturbed, each loop's decisions are those its fake stages' scores predict (tests.fakestages.scores, gate
`result > champion`); under chaos they must be the same, no Job name may be created twice, every iteration 1..N
must be run exactly once, every champion.json must name a checkpoint that matches its manifest, no gate may
succeed or fail without data, and the operator must come back from an API server restart by itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_stages.core.contract import StorageOptions
from sil_stages.core.store import Store
from tests.chaos.audit import JobAudit
from tests.chaos.conftest import REPORTS
from tests.chaos.disruptions import Chaos, champion_problems
from tests.chaos.settings import ChaosSettings
from tests.fakestages import expected_decisions, running_fake_stages, score
from tests.fakestages.loops import credentials_secret, s3_prometheus_loop, score_gate
from tests.integration.controlplane import ControlPlane, ControlPlaneError, wait_until
from tests.integration.operator_process import OperatorProcess
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import SeaweedFSProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]

BUCKET = "chaos"
STAGES = ("acquire", "select", "optimize", "evaluate")


def loop_names(settings: ChaosSettings) -> list[str]:
    return [f"chaos-{n:02d}" for n in range(settings.loops)]


def statuses(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    listed = plane.get_json("sil", "-n", namespace)["items"]
    return {item["metadata"]["name"]: item.get("status") or {} for item in listed}


def summary(plane: ControlPlane, namespace: str) -> str:
    """One line per loop: phase, message and its iterations' decisions and gate phases, for a failure message."""
    try:
        current = statuses(plane, namespace)
    except ControlPlaneError as error:
        return str(error)
    lines = []
    for name, status in sorted(current.items()):
        iterations = [
            (it["index"], it.get("decision"), [g.get("phase") for g in it.get("gates", [])])
            for it in status.get("iterations", [])
        ]
        lines.append(f"{name}: {status.get('phase')} {status.get('message', '')[:200]} {iterations}")
    return "\n".join(lines)


def test_loops_under_chaos_decide_as_undisturbed_without_duplicate_jobs_or_lost_iterations(
    chaos_plane: ControlPlane,
    weed: SeaweedFSProcess,
    prometheus: PrometheusServer,
    settings: ChaosSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plane, s3 = chaos_plane, weed.server
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)  # the test's own store reads (champion checks)
    namespace = plane.create_namespace("chaos")
    s3.create_bucket(BUCKET)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(credentials_secret(namespace, s3.env())))
    names = loop_names(settings)
    storage_uris = [f"s3://{BUCKET}/{name}" for name in names]
    store = Store(StorageOptions(uri=storage_uris[0], endpoint=s3.endpoint, region=s3.region))
    operator = OperatorProcess(plane, tmp_path / "operator.log", namespace, extra_env=s3.env())
    chaos_ref: list[Chaos] = []
    audit = JobAudit(plane.kubeconfig, namespace, lambda *a: chaos_ref[0].evaluate_completed(*a))
    chaos = Chaos(settings, plane, operator, weed, prometheus, store, storage_uris, lambda: audit)
    chaos_ref.append(chaos)
    started = time.monotonic()
    gate = score_gate(consecutiveErrorLimit=20)
    with running_fake_stages(plane.kubeconfig, tmp_path / "fakestages.log", [namespace], s3.env()) as writer:
        operator.start()
        try:
            for name in names:
                document = s3_prometheus_loop(
                    namespace,
                    name,
                    s3_endpoint=s3.endpoint,
                    bucket=BUCKET,
                    prometheus=prometheus.url,
                    pushgateway=prometheus.pushgateway_url,
                    max_iterations=settings.iterations,
                    gate=gate,
                )
                document["spec"]["runtime"]["backoffLimit"] = 2
                plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
            chaos.start()

            def finished() -> bool:
                try:
                    current = statuses(plane, namespace)
                except ControlPlaneError:  # kube-apiserver is restarting
                    return False
                phases = {name: status.get("phase") for name, status in current.items()}
                failed = [name for name, phase in phases.items() if phase == "Failed"]
                assert not failed, f"failed loops {failed}\n" + json.dumps(current, indent=1)
                return all(phase == "Succeeded" for phase in phases.values())

            try:
                wait_until(finished, settings.timeout, "every loop to finish", interval=2)
            except AssertionError as error:
                raise AssertionError(f"{error}; counts {chaos.counts}\n{summary(plane, namespace)}") from None
            finally:
                chaos.stop()
                audit.stop()
        finally:
            operator.stop()
            (tmp_path / "fakestages.tail").write_text(writer.log()[-20000:])
    elapsed = time.monotonic() - started
    counts = chaos.counts
    final = statuses(plane, namespace)
    created = audit.snapshot()
    (tmp_path / "statuses.json").write_text(json.dumps(final, indent=1))

    decided = {
        name: [iteration.get("decision") == "Promoted" for iteration in final[name].get("iterations", [])]
        for name in names
    }
    expected = {name: expected_decisions(name, settings.iterations) for name in names}
    different = {name: (decided[name], expected[name]) for name in names if decided[name] != expected[name]}
    duplicates = {name: uids for name, uids in created.items() if len(uids) > 1}
    indexes = {name: [iteration["index"] for iteration in final[name].get("iterations", [])] for name in names}
    wanted = list(range(1, settings.iterations + 1))
    lost = {name: got for name, got in indexes.items() if not set(wanted) <= set(got)}
    repeated = {name: got for name, got in indexes.items() if len(got) != len(set(got))}
    started_iterations = Counter((job.rsplit("-", 2)[0], job.rsplit("-", 2)[1]) for job in created if "-r" not in job)
    beyond = sorted(f"{loop}/{it}" for loop, it in started_iterations if int(it) > settings.iterations)
    checked, problems = champion_problems(store, storage_uris)
    counts.champion_checks += checked
    counts.champion_bad += problems

    REPORTS.append(
        f"chaos ({settings.form}, seed {settings.seed}): {settings.loops} loops x {settings.iterations} iterations "
        f"in {elapsed:.0f} s; operator kills {counts.operator_kills}, restarts {counts.operator_restarts}; "
        f"SeaweedFS kills {counts.s3_kills}; Prometheus stops {counts.prometheus_stops}; kube-apiserver restarts "
        f"{counts.apiserver_restarts} (operator recovered in {counts.apiserver_recovery_s} s, not restarted); "
        f"loops completed {sum(s.get('phase') == 'Succeeded' for s in final.values())}/{settings.loops}; "
        f"decisions as undisturbed {settings.loops - len(different)}/{settings.loops}; Jobs {len(created)}, "
        f"duplicates = {len(duplicates)}, lost = {len(lost)}, repeated = {len(repeated)}; champion.json checks "
        f"{counts.champion_checks}, bad = {len(counts.champion_bad)}"
    )
    print(REPORTS[-1])

    assert not counts.errors, counts.errors
    assert not different, f"decisions (got, undisturbed): {different}"
    assert not duplicates, f"Job names created more than once: {duplicates}"
    assert not lost and not repeated and not beyond, (lost, repeated, beyond)
    assert not counts.champion_bad, counts.champion_bad
    for name in names:
        for number, iteration in enumerate(final[name]["iterations"], start=1):
            if iteration["decision"] == "Promoted":
                judged = [m for m in iteration["gates"][0]["measurements"] if m["phase"] != "Error"]
                assert judged, f"{name} iteration {number} promoted without a measurement: {iteration}"
                assert (judged[-1]["phase"], judged[-1].get("value")) == ("Successful", score(name, number)), (
                    name,
                    iteration,
                )

    for window in counts.windows:
        if window.kind != "prometheus":
            continue
        measured = [
            (name, number, m)
            for name in names
            for number, iteration in enumerate(final[name]["iterations"], start=1)
            for gate_status in iteration.get("gates", [])
            for m in gate_status.get("measurements", [])
        ]
        during = [
            (name, number, m["phase"])
            for name, number, m in measured
            if window.down < datetime.fromisoformat(m["at"]) < window.up
        ]
        judged = [item for item in during if item[2] in ("Successful", "Failed")]
        assert not judged, f"gates judged without Prometheus ({window.down} to {window.up}): {judged}"
        assert any(phase == "Error" for _, _, phase in during), (
            f"no gate measured while Prometheus was down ({window.down} to {window.up}); measurements: "
            + json.dumps([(n, i, m["phase"], m["at"]) for n, i, m in measured])
        )
    assert counts.operator_kills == settings.operator_kills, "the loops ended before every kill was done"

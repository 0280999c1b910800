"""Times the operator's stage-to-stage latency on the test control plane: from one stage Job completing to the
next stage's Job being created.

    .venv/bin/python bench/stage_latency.py [--loops 2] [--iterations 3] [--run-ms 100]
                                            [--json bench/results/stage_latency.json]

Starts the test control plane (tests/integration/controlplane.py: real kube-apiserver, controller-manager and kwok
fake GPU nodes, which complete stage Jobs after `kwok.selfimprove.dev/run-ms` without running anything) and
`sil operator` as a subprocess, as the integration tests do. Loops run one after the other, each with
`--iterations` iterations (4 Jobs each, so 4 * iterations - 1 transitions per loop).

A watch on Jobs in this process timestamps (monotonic clock) the first event that shows a Job's Complete condition
and the ADDED event of every Job. A transition's latency is ADDED(next Job) - Complete seen(previous Job): both
are seen by the same client, so the watch delivery delay largely cancels out. The API server's own timestamps
(creationTimestamp - Complete lastTransitionTime) have 1 s resolution and are reported beside it for reference.

Two kinds of transitions: within an iteration (acquire → select → optimize → evaluate: reconcile, plan, create
ConfigMap and Job) and across iterations (evaluate → next acquire: also the promotion gates and the decision).
Prints a table (min, median, p90, max, n) and writes every sample and the summary as JSON. For comparison it
also reports each Job's own time from ADDED to Complete seen (Job controller, scheduling, kwok's run-ms), which is
where the rest of a loop's wall time goes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.integration.controlplane import ControlPlane, running_control_plane, wait_until  # noqa: E402
from tests.integration.operator_process import running_operator  # noqa: E402
from tests.integration.test_operator import kwok_loop  # noqa: E402

STAGES = ("acquire", "select", "optimize", "evaluate")
TARGET_MEDIAN_S = 1.0


@dataclass
class JobTimes:
    loop: str
    iteration: int
    stage: str
    added: float | None = None
    """Monotonic time of the ADDED watch event."""
    complete_seen: float | None = None
    """Monotonic time of the first watch event showing the Complete condition."""
    created_at: datetime | None = None
    """metadata.creationTimestamp (1 s resolution)."""
    completed_at: datetime | None = None
    """The Complete condition's lastTransitionTime (1 s resolution)."""


@dataclass
class JobRecorder:
    """Watches the namespace's Jobs in a thread and timestamps what it sees."""

    plane: ControlPlane
    namespace: str
    jobs: dict[str, JobTimes] = field(default_factory=dict)
    _stopped: bool = False

    def start(self) -> None:
        from kubernetes import client, config, watch

        self._api = client.BatchV1Api(config.new_client_from_config(str(self.plane.kubeconfig)))
        self._watch = watch.Watch()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Job watch did not start")

    def _run(self) -> None:
        from urllib3.exceptions import HTTPError

        listed = self._api.list_namespaced_job(self.namespace)
        self._ready.set()
        try:
            for event in self._watch.stream(
                self._api.list_namespaced_job,
                self.namespace,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=3600,
            ):
                now = time.monotonic()
                self._record(event["type"], event["object"], now)
        except HTTPError:
            if not self._stopped:
                raise

    def _record(self, kind: str, job: Any, now: float) -> None:
        labels = job.metadata.labels or {}
        if "selfimprove.dev/loop" not in labels:
            return
        times = self.jobs.setdefault(
            job.metadata.name,
            JobTimes(
                labels["selfimprove.dev/loop"],
                int(labels["selfimprove.dev/iteration"]),
                labels["selfimprove.dev/stage"],
            ),
        )
        if kind == "ADDED" and times.added is None:
            times.added = now
            times.created_at = job.metadata.creation_timestamp
        for condition in (job.status.conditions if job.status else None) or []:
            if condition.type == "Complete" and condition.status == "True" and times.complete_seen is None:
                times.complete_seen = now
                times.completed_at = condition.last_transition_time

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


@dataclass
class Transition:
    loop: str
    frm: str
    to: str
    kind: str
    latency_s: float
    server_s: float | None


def transitions(jobs: dict[str, JobTimes], loop: str) -> list[Transition]:
    ordered = sorted((t for t in jobs.values() if t.loop == loop), key=lambda t: (t.iteration, STAGES.index(t.stage)))
    found = []
    for previous, following in itertools.pairwise(ordered):
        if previous.complete_seen is None or following.added is None:
            continue
        server = None
        if previous.completed_at and following.created_at:
            server = (following.created_at - previous.completed_at).total_seconds()
        kind = "within iteration" if previous.iteration == following.iteration else "next iteration (gates)"
        found.append(
            Transition(
                loop,
                f"{previous.iteration}-{previous.stage}",
                f"{following.iteration}-{following.stage}",
                kind,
                following.added - previous.complete_seen,
                server,
            )
        )
    return found


def summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered) + 0.5) - 1))]  # nearest rank
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": p90,
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def loop_phase(plane: ControlPlane, namespace: str, name: str) -> str | None:
    result = plane.kubectl("get", "sil", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
    return result.stdout.strip() or None


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=2, help="loops to run, one after the other (default 2)")
    parser.add_argument("--iterations", type=int, default=3, help="maxIterations of each loop (default 3)")
    parser.add_argument("--run-ms", type=int, default=100, help="how long kwok 'runs' each stage pod (default 100)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "stage_latency.json")
    parser.add_argument("--work-dir", type=Path, help="control plane data, logs and the operator log (kept)")
    args = parser.parse_args(argv)
    console = Console()
    host = machine()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="sil-stage-latency-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    operator_log = work_dir / "operator.log"
    loops: list[dict[str, Any]] = []
    started = time.monotonic()
    with running_control_plane(work_dir=work_dir / "controlplane") as plane:
        console.print(f"control plane ready in {plane.timings['ready_s']:.1f} s")
        namespace = plane.create_namespace("stage-latency")
        recorder = JobRecorder(plane, namespace)
        recorder.start()
        with running_operator(plane, namespace, operator_log) as operator:
            for index in range(args.loops):
                name = f"latency-{index + 1}"
                document = kwok_loop(namespace, name, work_dir / "store" / name, maxIterations=args.iterations)
                document["spec"]["runtime"]["podAnnotations"] = {"kwok.selfimprove.dev/run-ms": str(args.run_ms)}
                loop_started = time.monotonic()
                plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
                wait_until(
                    lambda: loop_phase(plane, namespace, name) in ("Succeeded", "Failed"),  # noqa: B023 (waits here)
                    60 + 30 * args.iterations,
                    f"loop {name} to finish; operator log:\n{operator.log()[-4000:]}",
                    interval=0.5,
                )
                loops.append(
                    {
                        "name": name,
                        "phase": loop_phase(plane, namespace, name),
                        "seconds": round(time.monotonic() - loop_started, 2),
                    }
                )
        recorder.stop()
    found = [t for loop in loops for t in transitions(recorder.jobs, loop["name"])]
    expected = args.loops * (4 * args.iterations - 1)
    kinds = ["within iteration", "next iteration (gates)"]
    stats = {"all": summary([t.latency_s for t in found])}
    stats.update({kind: summary([t.latency_s for t in found if t.kind == kind]) for kind in kinds})
    server = summary([t.server_s for t in found if t.server_s is not None])
    lifetimes = [
        t.complete_seen - t.added for t in recorder.jobs.values() if t.added is not None and t.complete_seen is not None
    ]
    job_lifetime = summary(lifetimes)

    table = Table(title=f"Job Complete seen → next stage Job ADDED (s), {len(found)} of {expected} transitions")
    for column in ("transitions", "min", "median", "p90", "max", "n"):
        table.add_column(column, justify="right" if column != "transitions" else "left")
    for label, row in [*stats.items(), ("API timestamps (1 s resolution)", server)]:
        if row["n"]:
            table.add_row(label, *(f"{row[k]:.3f}" for k in ("min", "median", "p90", "max")), str(row["n"]))
    console.print(table)
    if job_lifetime["n"]:
        console.print(
            f"for comparison, Job ADDED → Complete seen (pod scheduling, kwok run-ms {args.run_ms}, Job controller): "
            f"median {job_lifetime['median']:.3f} s, p90 {job_lifetime['p90']:.3f} s, n {job_lifetime['n']}"
        )
    for loop in loops:
        console.print(f"loop {loop['name']}: {loop['phase']} in {loop['seconds']:.1f} s")
    median = stats["all"].get("median")
    verdict = "met" if median is not None and median < TARGET_MEDIAN_S else "NOT met"
    console.print(f"target median < {TARGET_MEDIAN_S:.0f} s: {verdict}; operator log: {operator_log}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "stage_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": host,
        "parameters": {
            "loops": args.loops,
            "iterations": args.iterations,
            "run_ms": args.run_ms,
            "operator_env": {"SIL_RESYNC_SECONDS": "30"},
        },
        "loops": loops,
        "summary_s": stats,
        "api_timestamps_summary_s": server,
        "job_added_to_complete_s": job_lifetime,
        "target_median_s": TARGET_MEDIAN_S,
        "target_met": verdict == "met",
        "transitions": [t.__dict__ for t in found],
        "total_seconds": round(time.monotonic() - started, 1),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0 if len(found) == expected else 1


if __name__ == "__main__":
    sys.exit(main())

"""One operator, many concurrent loops: stage handoff latency, operator RSS and CPU, API requests per stage
transition, and the time to drain, at 10, 100 and 1,000 loops.

    .venv/bin/python bench/scale.py [--loops 10 100 1000] [--iterations 2] [--run-ms MS]
                                    [--json bench/results/scale.json] [--work-dir DIR]

For each size, fresh: the test control plane (tests/integration/controlplane.py) with enough kwok GPU nodes for one
pod per loop and the Job controller's and scheduler's client rate limits lifted (`--controllers-qps`), SeaweedFS
as the loops' S3 store, a Pushgateway and Prometheus, the fake stage writer (tests/fakestages: writes every stage's
outputs and manifest to S3 while kwok "runs" its pod, and pushes evaluate's scores), and `sil operator` as a
subprocess with its own user, whose every request the API server writes to an audit log. All loops are applied at
once; each runs `--iterations` iterations of 4 stages and a Prometheus gate (`result > champion` on the pushed
held-out score) that really measures and promotes.

Measured per size:
- handoff: Job Complete seen → next stage's Job ADDED, both timestamped by one watch in this process
  (bench/stage_latency.py's JobRecorder), p50 / p90 / p99, within an iteration and across (gates, decision);
- the operator's peak RSS and its CPU seconds (utime + stime, /proc) per transition, from the apply to the drain;
- API requests per transition: the operator's by verb (audit log) and the whole control plane's by verb
  (kube-apiserver's `apiserver_request_total`, scraped with the admin token before the apply and after the drain);
- time to drain: from the apply of the first loop until every loop is Succeeded or Failed.
Targets: p50 ≤ 0.5 s, p99 ≤ 2 s, RSS ≤ 250 MB, ≤ 6 operator API writes per transition.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.scale_stats import (  # noqa: E402
    audited_requests,
    by_verb,
    count_requests,
    delta,
    distribution,
    proc_cpu_seconds,
    proc_rss_bytes,
    request_totals,
    writes,
)
from bench.stage_latency import JobRecorder, JobTimes, machine, transitions  # noqa: E402
from tests.fakestages import running_fake_stages  # noqa: E402
from tests.fakestages.loops import credentials_secret, s3_prometheus_loop, score_gate  # noqa: E402
from tests.integration.controlplane import ControlPlane, FakeNodes, running_control_plane  # noqa: E402
from tests.integration.operator_process import running_operator  # noqa: E402
from tests.servers.processes import free_port  # noqa: E402
from tests.servers.prometheus import running_prometheus  # noqa: E402
from tests.servers.seaweedfs import S3Server, running_seaweedfs  # noqa: E402

OPERATOR_USER = "sil-operator"
PODS_PER_NODE = 110
TARGETS = {"p50_s": 0.5, "p99_s": 2.0, "rss_mb": 250.0, "writes_per_transition": 6.0}
GATE = score_gate(initialDelaySeconds=0)
"""evaluate's score is pushed while its pod "runs" and scraped every second: the gate need not wait before its
first look (the fake stages' default waits 2 s), so the across-iteration handoff measures the operator."""
BUCKET = "loops"
APPLY_CHUNK = 100
"""Loops per `kubectl apply` (one List document each)."""


@dataclass
class ProcessSampler:
    """Samples a process's RSS and CPU time from /proc in a thread: peak RSS, CPU at marks."""

    pid: int
    interval: float = 0.5
    peak_rss: int = 0
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> tuple[int, float]:
        proc = Path("/proc") / str(self.pid)
        rss = proc_rss_bytes((proc / "status").read_text())
        cpu = proc_cpu_seconds((proc / "stat").read_text(), os.sysconf("SC_CLK_TCK"))
        self.peak_rss = max(self.peak_rss, rss)
        self.samples.append((time.monotonic(), rss, cpu))
        return rss, cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError):
                self.sample()

    def stop(self) -> None:
        self._stop.set()


def apiserver_metrics(plane: ControlPlane) -> str:
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.check_hostname = False  # the self-signed serving certificate names no host we dial
    request = urllib.request.Request(f"{plane.server}/metrics", headers={"Authorization": f"Bearer {plane.token}"})
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def loop_phases(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    """name → {phase, decisions} of every loop in the namespace (one LIST)."""
    items = plane.get_json("sil", "-n", namespace)["items"]
    found = {}
    for item in items:
        status = item.get("status") or {}
        decisions = [i.get("decision") for i in status.get("iterations") or []]
        found[item["metadata"]["name"]] = {
            "phase": status.get("phase"),
            "decisions": decisions,
            "message": status.get("message"),
        }
    return found


@contextlib.contextmanager
def services(work_dir: Path, loops: int, args: Any) -> Iterator[tuple[ControlPlane, S3Server, Any]]:
    nodes = FakeNodes(count=max(2, math.ceil(loops / PODS_PER_NODE)), gpus=PODS_PER_NODE, pods=PODS_PER_NODE)
    with (
        running_control_plane(
            work_dir=work_dir / "controlplane",
            pod_runner=False,
            fake_nodes=nodes,
            controllers_qps=args.controllers_qps,
            audited_users=[OPERATOR_USER],
            ready_timeout=120,
        ) as plane,
        running_seaweedfs(work_dir / "seaweedfs") as s3,
        running_prometheus(work_dir / "prometheus") as prometheus,
    ):
        yield plane, s3, prometheus


def run_ms(loops: int, args: Any) -> int:
    """The pod run time: the fake writer (8 threads, ~0.2-0.4 s a stage here) writes each stage while its pod
    "runs", and a Job that completes before its manifest is written is a failed attempt. With every loop's pod
    running at once it needs ~40 ms of run time per loop to keep up on this machine."""
    return int(args.run_ms or max(1500, 40 * loops))


def run_size(loops: int, args: Any, console: Console) -> dict[str, Any]:
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="sil-scale-"))) / f"loops-{loops}"
    work_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"{loops} loops, {args.iterations} iterations, run-ms {run_ms(loops, args)}; logs in {work_dir}")
    started = time.monotonic()
    with services(work_dir, loops, args) as (plane, s3, prometheus):
        console.print(f"control plane, S3 and Prometheus ready in {time.monotonic() - started:.1f} s")
        namespace = plane.create_namespace("scale")
        s3.create_bucket(BUCKET)
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(credentials_secret(namespace, s3.env())))
        names = [f"loop-{index:04d}" for index in range(loops)]
        documents = [
            s3_prometheus_loop(
                namespace,
                name,
                s3_endpoint=s3.endpoint,
                bucket=BUCKET,
                prometheus=prometheus.url,
                pushgateway=prometheus.pushgateway_url,
                max_iterations=args.iterations,
                run_ms=run_ms(loops, args),
                gate=GATE,
            )
            for name in names
        ]
        recorder = JobRecorder(plane, namespace)
        recorder.start()
        metrics_port = free_port()
        operator_env = {
            **s3.env(),
            "KUBECONFIG": str(plane.user_kubeconfig(OPERATOR_USER)),
            "SIL_METRICS_PORT": str(metrics_port),
        }
        with (
            running_fake_stages(plane.kubeconfig, work_dir / "fakestages.log", [namespace], env=s3.env()),
            running_operator(plane, namespace, work_dir / "operator.log", extra_env=operator_env) as operator,
        ):
            assert operator.process is not None
            sampler = ProcessSampler(operator.process.pid)
            time.sleep(3)  # the operator's startup (imports, first LIST and watches) is not part of the measurement
            audit_offset = plane.audit_log.stat().st_size if plane.audit_log.exists() else 0
            requests_before = request_totals(apiserver_metrics(plane))
            _, cpu_before = sampler.sample()
            sampler.start()
            applied = time.monotonic()
            for first in range(0, loops, APPLY_CHUNK):
                chunk = {"apiVersion": "v1", "kind": "List", "items": documents[first : first + APPLY_CHUNK]}
                plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(chunk), timeout=300)
            console.print(f"applied {loops} loops in {time.monotonic() - applied:.1f} s")
            drained = None
            phases: dict[str, dict[str, Any]] = {}
            poll = max(2.0, loops / 200)
            deadline = applied + args.timeout
            while time.monotonic() < deadline:
                time.sleep(poll)
                if operator.process.poll() is not None:
                    raise RuntimeError(f"the operator exited; its log:\n{operator.log()[-3000:]}")
                phases = loop_phases(plane, namespace)
                done = sum(1 for p in phases.values() if p["phase"] in ("Succeeded", "Failed"))
                if done == loops:
                    drained = time.monotonic() - applied
                    break
                console.print(f"  {time.monotonic() - applied:6.0f} s: {done} of {loops} loops done", highlight=False)
            rss_end, cpu_after = sampler.sample()
            sampler.stop()
            requests_after = request_totals(apiserver_metrics(plane))
            time.sleep(2)  # the audit log is written in batches
            with plane.audit_log.open() as audit:
                audit.seek(audit_offset)
                operator_requests = count_requests(audited_requests(audit, OPERATOR_USER))
        recorder.stop()
    found = []
    by_loop: dict[str, dict[str, JobTimes]] = defaultdict(dict)
    for job_name, times in recorder.jobs.items():
        by_loop[times.loop][job_name] = times
    for name in names:
        found.extend(transitions(by_loop[name], name))
    count = len(found)
    expected = loops * (4 * args.iterations - 1)
    within = [t.latency_s for t in found if t.kind == "within iteration"]
    across = [t.latency_s for t in found if t.kind != "within iteration"]
    plane_requests = delta(requests_before, requests_after)
    per = max(count, 1)
    finished = Counter(p["phase"] for p in phases.values())
    decisions = Counter(d for p in phases.values() for d in p["decisions"])
    return {
        "loops": loops,
        "transitions": count,
        "transitions_expected": expected,
        "handoff_s": {
            "all": distribution([t.latency_s for t in found]),
            "within iteration": distribution(within),
            "across iterations (gates)": distribution(across),
        },
        "handoff_api_timestamps_s": distribution([t.server_s for t in found if t.server_s is not None]),
        "operator_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "operator_rss_end_mb": round(rss_end / 2**20, 1),
        "operator_cpu_s": round(cpu_after - cpu_before, 2),
        "operator_cpu_s_per_transition": round((cpu_after - cpu_before) / per, 4),
        "operator_requests_per_transition": {v: round(n / per, 2) for v, n in by_verb(operator_requests).items()},
        "operator_writes_per_transition": round(writes(operator_requests) / per, 2),
        "operator_requests": {f"{verb} {resource}": n for (verb, resource), n in operator_requests.most_common()},
        "apiserver_requests_per_transition": {v: round(n / per, 2) for v, n in by_verb(plane_requests).items()},
        "apiserver_requests": {f"{verb} {resource}": n for (verb, resource), n in plane_requests.items()},
        "drain_s": None if drained is None else round(drained, 1),
        "transitions_per_s": None if not drained else round(count / drained, 1),
        "pod_run_ms": run_ms(loops, args),
        "loop_phases": dict(finished),
        "failed_loop_messages": dict(
            Counter(str(p["message"])[:200] for p in phases.values() if p["phase"] == "Failed").most_common(5)
        ),
        "jobs_created": len(recorder.jobs),
        "jobs_expected": loops * 4 * args.iterations,
        "decisions": dict(decisions),
        "wall_s": round(time.monotonic() - started, 1),
    }


def print_table(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="One operator, N concurrent loops (handoff = Job Complete seen → next Job ADDED)")
    columns = [
        "loops", "transitions", "handoff p50 s", "p90 s", "p99 s", "across-iteration p50 / p99 s",
        "peak RSS MB", "CPU ms / transition", "operator API requests / transition", "operator writes / transition",
        "all API requests / transition", "drain s", "loops done",
    ]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        handoff = row["handoff_s"]["all"]
        across = row["handoff_s"]["across iterations (gates)"]
        table.add_row(
            str(row["loops"]),
            f"{row['transitions']} / {row['transitions_expected']}",
            *(f"{handoff[k]:.3f}" if handoff["n"] else "-" for k in ("p50", "p90", "p99")),
            f"{across['p50']:.3f} / {across['p99']:.3f}" if across["n"] else "-",
            f"{row['operator_peak_rss_mb']:.0f}",
            f"{1000 * row['operator_cpu_s_per_transition']:.0f}",
            " ".join(f"{v} {n:g}" for v, n in row["operator_requests_per_transition"].items()),
            f"{row['operator_writes_per_transition']:g}",
            " ".join(f"{v} {n:g}" for v, n in row["apiserver_requests_per_transition"].items()),
            "-" if row["drain_s"] is None else f"{row['drain_s']:.0f}",
            " ".join(f"{p} {n}" for p, n in row["loop_phases"].items()),
        )
    console.print(table)


def verdicts(row: dict[str, Any]) -> dict[str, bool | None]:
    handoff = row["handoff_s"]["all"]
    return {
        "p50_s": handoff["p50"] <= TARGETS["p50_s"] if handoff["n"] else None,
        "p99_s": handoff["p99"] <= TARGETS["p99_s"] if handoff["n"] else None,
        "rss_mb": row["operator_peak_rss_mb"] <= TARGETS["rss_mb"],
        "writes_per_transition": row["operator_writes_per_transition"] <= TARGETS["writes_per_transition"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, nargs="+", default=[10, 100, 1000], help="sizes, run one after another")
    parser.add_argument("--iterations", type=int, default=2, help="maxIterations of each loop (default 2)")
    parser.add_argument(
        "--run-ms",
        type=int,
        help="how long kwok 'runs' each stage pod (default: max(1500, 40 x loops): the fake writer keeps up)",
    )
    parser.add_argument(
        "--controllers-qps", type=float, default=500, help="client QPS of the Job controller and scheduler"
    )
    parser.add_argument("--timeout", type=float, default=1500, help="seconds one size may take to drain")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--work-dir", type=Path, help="logs of every process, kept (default: a temporary folder)")
    args = parser.parse_args(argv)
    console = Console(width=200)
    host = machine()
    rows = []
    for loops in args.loops:
        rows.append(run_size(loops, args, console))
        rows[-1]["targets_met"] = verdicts(rows[-1])
        print_table(console, rows)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "benchmark": "scale",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": host,
            "parameters": {
                "iterations": args.iterations,
                "run_ms": {str(loops): run_ms(loops, args) for loops in args.loops},
                "controllers_qps": args.controllers_qps,
                "operator_env": {"SIL_RESYNC_SECONDS": "30"},
            },
            "targets": TARGETS,
            "sizes": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0 if all(r["loop_phases"] == {"Succeeded": r["loops"]} for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

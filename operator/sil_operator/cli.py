"""`sil`: run a loop on this machine, validate a loop file, show a loop's status, explain the API.

Exit codes: 0 done (or suspended), 1 the loop failed, 2 the loop file is invalid (nothing was written),
3 another run holds the loop, 130 interrupted (run the same command again to continue); `sil operator
--leader-elect`: 4 the operator lost the lead (it exits at once so that its pod restarts as a follower).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from sil_operator.api.loader import SpecError, load_loop
from sil_operator.api.spec import LoopSpec, SelfImprovementLoop
from sil_operator.api.status import IN_PROGRESS_STAGE_PHASES, LoopPhase, LoopStatus, StagePhase
from sil_operator.explain import explain
from sil_operator.failures import LoopProblem, classify
from sil_operator.local.runner import LocalRunner, RunnerBusy, load_status, run_dir_for
from sil_operator.planner import Event
from sil_operator.report import iteration_table, stage_summary, write_report
from sil_stages.core.contract import StorageOptions
from sil_stages.core.store import Store, StoreError, is_remote, local_path

if TYPE_CHECKING:
    from sil_operator.kube.leader import LeaderElector

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_LOST_LEADERSHIP = 4
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a supervisor, a CI timeout): the same orderly stop as Ctrl-C. Without it the default action
    would end `sil run` at once, its stages dying by the parent-death signal and a container's engine client with
    them, leaving the container running."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short (10 s at most)
    raise Terminated


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def preflight(spec: LoopSpec) -> list[str]:
    """Local inputs that do not exist, by field path: caught before anything is written."""
    problems = []
    checks = [("spec.model.uri", spec.model.uri, True)]
    if spec.acquire.prompts.uri is not None:
        checks.append(("spec.acquire.prompts.uri", spec.acquire.prompts.uri, False))
    selection = spec.optimize.checkpoint_selection
    if selection is not None:
        checks.append(("spec.optimize.checkpointSelection.validationUri", selection.validation_uri, False))
    for i, dataset in enumerate(spec.evaluate.datasets):
        if dataset.uri is not None:
            checks.append((f"spec.evaluate.datasets.{i}.uri", dataset.uri, False))
        if dataset.harness is not None:
            checks.append((f"spec.evaluate.datasets.{i}.harness.includePath", dataset.harness.include_path, True))
    if spec.select.scorer.model is not None:
        checks.append(("spec.select.scorer.model", spec.select.scorer.model, True))
    for field, uri, is_dir in checks:
        if uri.startswith("file://"):
            path = local_path(uri)
            if not (path.is_dir() if is_dir else path.is_file()):
                kind = "directory" if is_dir else "file"
                problems.append(f"{field}: no such {kind} {path}")
    return problems


def _load(path: Path, console: Console) -> SelfImprovementLoop | None:
    try:
        loop = load_loop(path)
    except SpecError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return None
    for deprecated in loop.spec.deprecations():
        console.print(f"[yellow]warning:[/] {deprecated}", highlight=False)
    problems = preflight(loop.spec)
    if problems:
        console.print(f"[red]error:[/] {path}: inputs not found", highlight=False)
        for problem in problems:
            console.print(f"  {problem}", highlight=False)
        return None
    return loop


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    loop = _load(args.loop, console)
    if loop is None:
        return EXIT_INVALID
    spec = loop.spec
    console.print(
        f"[green]valid[/]: {loop.metadata.name}: {spec.max_iterations} iterations, "
        f"{len(spec.promotion.gates)} gate(s), store {spec.storage.uri}",
        highlight=False,
    )
    return EXIT_OK


class _Progress:
    """Prints one line per event and keeps a status line: iteration, stage, elapsed, latest scores."""

    def __init__(self, console: Console, loop: SelfImprovementLoop) -> None:
        self.console = console
        self.loop = loop
        self.started = time.monotonic()
        self.spinner = console.status("starting", spinner="dots")

    def event(self, event: Event, status: LoopStatus) -> None:
        colour = "yellow" if event.type == "Warning" else "cyan"
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"[dim]{stamp}[/] [{colour}]{event.reason:<16}[/] {event.message}", highlight=False)

    def status(self, status: LoopStatus) -> None:
        current = status.current()
        stage = "-"
        if current is not None:
            running = [s for s in current.stages if s.phase in IN_PROGRESS_STAGE_PHASES]
            stage = running[0].stage if running else ("gates" if len(current.stages) == 4 else "-")
            if running and running[0].phase is not StagePhase.RUNNING:
                stage += f" ({running[0].phase.value.lower()})"
        champion = status.champion.score if status.champion else None
        elapsed = int(time.monotonic() - self.started)
        iteration = f"iteration {status.iteration}/{self.loop.spec.max_iterations}"
        score = "-" if champion is None else f"{champion:.3f}"
        self.spinner.update(f"{iteration} · {stage} · {elapsed // 60}m{elapsed % 60:02d}s · champion {score}")


def _report_dir(storage_uri: str) -> Path:
    return local_path(storage_uri) if not is_remote(storage_uri) else run_dir_for(storage_uri)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    loop = _load(args.loop, console)
    if loop is None:
        return EXIT_INVALID
    progress = _Progress(console, loop)
    runner = LocalRunner(
        loop=loop,
        store=Store(_storage_options(loop)),
        loop_dir=args.loop.resolve().parent,
        on_event=progress.event,
        on_status=progress.status,
        stage_image=args.stage_image or None,
        container_engine=args.container_engine,
    )
    console.print(f"[bold]sil run[/] {loop.metadata.name} → {loop.spec.storage.uri}", highlight=False)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with progress.spinner:
            status = runner.run()
    except RunnerBusy as busy:
        console.print(f"[red]error:[/] {busy}", highlight=False)
        return EXIT_BUSY
    except (StoreError, LoopProblem) as error:  # what failed and what to do, as one line; no traceback
        console.print(f"[red]error:[/] {classify(error).line()}", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except Terminated:
        console.print("[yellow]terminated[/] (SIGTERM): run the same command again to continue where it stopped")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: run the same command again to continue where it stopped")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _finish(status, loop, console)


def _storage_options(loop: SelfImprovementLoop) -> StorageOptions:
    storage = loop.spec.storage
    return StorageOptions(uri=storage.uri, endpoint=storage.endpoint, region=storage.region)


def _finish(status: LoopStatus, loop: SelfImprovementLoop, console: Console) -> int:
    console.print(iteration_table(status))
    json_path, png_path = write_report(status, _report_dir(loop.spec.storage.uri))
    champion = status.champion
    if champion is not None:
        score = "-" if champion.score is None else f"{champion.score:.3f}"
        console.print(f"champion: iteration {champion.iteration} (score {score}) {champion.uri}", highlight=False)
    console.print(f"report: {json_path}  plot: {png_path}", highlight=False)
    if status.phase is LoopPhase.FAILED:
        console.print(f"[red]failed[/]: {status.message}", highlight=False)
        return EXIT_FAILED
    if status.phase is LoopPhase.SUSPENDED:
        console.print(f"[yellow]suspended[/]: {status.message}; set spec.suspend: false and run again")
        return EXIT_OK
    console.print(f"[green]{status.phase.value}[/]: {status.message}", highlight=False)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    loop = _load(args.loop, console)
    if loop is None:
        return EXIT_INVALID
    status = load_status(Store(_storage_options(loop)), loop.spec.storage.uri)
    console.print(f"phase: {status.phase.value}  iteration: {status.iteration}  {status.message or ''}")
    current = status.current()
    if current is not None and current.stages:
        console.print("stages: " + stage_summary(current), highlight=False)
    console.print(iteration_table(status))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    try:
        console.print(explain(args.field or "spec"), highlight=False, markup=False)
    except KeyError as error:
        console.print(f"[red]error:[/] {error.args[0]}", highlight=False)
        return EXIT_INVALID
    return EXIT_OK


def cmd_crd(args: argparse.Namespace, console: Console) -> int:
    from sil_operator.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return EXIT_OK


def cmd_operator(args: argparse.Namespace, console: Console) -> int:
    """Runs the Kubernetes operator (kopf) until interrupted; with --leader-elect, only once it leads."""
    import logging

    import kopf

    import sil_operator.kube.handlers  # noqa: F401  (registers the handlers)
    from sil_operator.metrics import OperatorMetrics

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs "Handler '...' succeeded." at INFO for every watch event it hands to a handler: ~9 lines per
        # stage transition, most of them the operator's own status patches coming back (bench/scale.py). Its
        # warnings and errors (a handler that failed, a daemon that would not stop) still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # /metrics is served from the start, by followers too (a ServiceMonitor scrapes every replica; a follower shows
    # selfimprove_operator_leader 0), and handed to the handlers through kopf's memo.
    metrics = OperatorMetrics()
    metrics.leading(not args.leader_elect)
    port = args.metrics_port or int(os.environ.get("SIL_METRICS_PORT") or 0)
    if port:
        metrics.serve(port, os.environ.get("SIL_METRICS_ADDRESS") or args.metrics_address)
    elector = None
    if args.leader_elect:
        namespace = args.leader_election_namespace or _own_namespace(args.namespace)
        if not namespace:
            console.print(
                "[red]error:[/] --leader-election-namespace: name the namespace of the Lease (outside a pod there "
                "is no POD_NAMESPACE or service account namespace to default to)",
                highlight=False,
            )
            return EXIT_INVALID
        try:
            elector = _lead(namespace, args.leader_election_id, args.liveness)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        metrics.leading(True)
    try:
        kopf.run(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=list(args.namespace),
            liveness_endpoint=args.liveness or None,
            memo=kopf.Memo(metrics=metrics),
        )
    finally:
        if elector is not None:
            elector.release()
    return EXIT_OK


def _own_namespace(served: list[str]) -> str | None:
    """The Lease's default namespace: the pod's own, else the one namespace served."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return served[0] if len(served) == 1 else None


def _lead(namespace: str, name: str, liveness: str) -> LeaderElector:
    """Blocks until this process holds the Lease (serving the liveness endpoint meanwhile), then renews it in the
    background; losing it ends the process at once, since two operators must never act together."""
    import socket

    from sil_operator.kube.leader import FollowerHealth, LeaderElector, LeaseLock, api_client_from_environment

    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"
    elector = LeaderElector(LeaseLock(api_client_from_environment(), namespace, name), identity, _lost_lead)
    health = FollowerHealth(liveness) if liveness else None
    try:
        elector.acquire()
    finally:
        if health is not None:
            health.stop()
    elector.start_renewing()
    return elector


def _lost_lead(reason: str) -> None:
    """Exits without any cleanup: kopf's handlers must not take one more step once another operator may lead."""
    import logging

    logging.getLogger("selfimprove.leader").error("lost the lead (%s); exiting to restart as a follower", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEADERSHIP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sil", description="Self-improvement loops for language models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a loop on this machine (continues an interrupted run)")
    run.add_argument("loop", type=Path, help="loop file (YAML)")
    run.add_argument(
        "--stage-image",
        default="",
        help="run each stage in a container of this image (podman), as its stage Job runs it; default: local processes",
    )
    run.add_argument(
        "--container-engine", default="podman", help="the engine that runs --stage-image (podman's command line)"
    )
    run.set_defaults(handler=cmd_run)
    validate = commands.add_parser("validate", help="check a loop file without running it")
    validate.add_argument("loop", type=Path)
    validate.set_defaults(handler=cmd_validate)
    status = commands.add_parser("status", help="show a loop's status and iterations")
    status.add_argument("loop", type=Path)
    status.set_defaults(handler=cmd_status)
    explain_cmd = commands.add_parser("explain", help="document a field, e.g. `sil explain spec.select.keep`")
    explain_cmd.add_argument("field", nargs="?")
    explain_cmd.set_defaults(handler=cmd_explain)
    operator = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument(
        "--namespace", action="append", default=[], help="serve only this namespace (repeatable); default: all"
    )
    operator.add_argument(
        "--liveness", default="", help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    operator.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    operator.add_argument(
        "--metrics-address", default="127.0.0.1", help="address for the metrics port (0.0.0.0 in a pod)"
    )
    operator.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease (for more than one replica)",
    )
    operator.add_argument(
        "--leader-election-namespace",
        default="",
        help="namespace of the Lease; default: the pod's own ($POD_NAMESPACE), else the one --namespace served",
    )
    operator.add_argument(
        "--leader-election-id", default="selfimprove-operator", help="name of the Lease (one per operator install)"
    )
    operator.add_argument("--verbose", action="store_true")
    operator.set_defaults(handler=cmd_operator)
    crd_cmd = commands.add_parser("crd", help="print the CustomResourceDefinition (generated from the API models)")
    crd_cmd.set_defaults(handler=cmd_crd)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Logs and CI output are not terminals: give them room instead of rich's 80-column default.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    code: int = args.handler(args, console)
    return code


if __name__ == "__main__":
    sys.exit(main())

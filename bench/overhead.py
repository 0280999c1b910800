"""The local overhead of `sil run`: the demo loop as a user runs it, against the same stage configs run one after
another in a single process.

    .venv/bin/python bench/overhead.py [--loop examples/arithmetic/loop.yaml] [--iterations 2]
                                       [--runners fork-server,subprocess] [--json bench/results/overhead.json]

For each runner in `--runners` (`fork-server`: the default of `sil run`; `subprocess`: `SIL_FORK_SERVER=0`), runs
`sil run` on a copy of the loop with `maxIterations: --iterations` into a fresh store and times it. Then the
baseline: the stage configs the first of those runs wrote (`<store>/local/configs/`, in the order of its launch
journal), pointed at another fresh store, run by one Python process that imports `sil_stages` once and calls
`sil_stages.cli.main` for each, timed from that process's start (its imports included) to its end. The overhead
of a runner is its `sil run` time divided by the baseline's; the target is at most 1.3.

Prints a table per stage run (seconds from launch to manifest in `sil run`, as in status.json, and seconds of the
`main` call in the baseline) and the totals with their ratios; the load average of the machine before and after
each part, since the numbers from a shared machine depend on it; writes the same as JSON. The base model is built
first if it is not cached (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
RUNNERS = {"fork-server": "1", "subprocess": "0"}
TARGET_RATIO = 1.3


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def loop_copy(loop: Path, storage: Path, iterations: int, name: str) -> Path:
    """A copy of the loop next to the original (so relative paths still resolve) with a new storage folder."""
    document = yaml.safe_load(loop.read_text())
    document["spec"]["storage"] = {"uri": storage.as_uri()}
    document["spec"]["maxIterations"] = iterations
    copy = loop.with_name(f".bench-overhead-{name}-{loop.name}")
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


def stage_env(loop_dir: Path) -> dict[str, str]:
    """What `sil run` gives a stage: its default thread count and the loop's folder on the path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    env["PYTHONPATH"] = os.pathsep.join([str(loop_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def sil_run(loop: Path, runner: str) -> dict[str, Any]:
    env = {**os.environ, "SIL_FORK_SERVER": RUNNERS[runner]}
    before = load()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "sil_operator.cli", "run", str(loop)],
        check=True,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return {"seconds": round(time.monotonic() - started, 1), "load_before": before, "load_after": load()}


def stage_seconds(status: dict[str, Any]) -> dict[tuple[int, str], float]:
    seconds = {}
    for iteration in status["iterations"]:
        for stage in iteration["stages"]:
            if stage.get("startedAt") and stage.get("finishedAt"):
                start = datetime.fromisoformat(stage["startedAt"])
                end = datetime.fromisoformat(stage["finishedAt"])
                seconds[(iteration["index"], stage["stage"])] = round((end - start).total_seconds(), 1)
    return seconds


def replayed_configs(store: Path, target: Path) -> list[Path]:
    """The stage configs of a finished `sil run`, in launch order, rewritten to write into another store."""
    run_dir = store / "local"
    configs: dict[tuple[int, str], Path] = {}
    for path in sorted((run_dir / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        configs[(config["iteration"], config["stage"])] = path
    order = []
    for line in (run_dir / "launches.jsonl").read_text().splitlines():
        entry = json.loads(line)
        key = (entry["iteration"], entry["stage"])
        if key not in order:
            order.append(key)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for number, key in enumerate(order):
        text = configs[key].read_text().replace(store.as_uri(), target.as_uri()).replace(str(store), str(target))
        path = target.parent / f"replay-configs/{number:02d}-{key[0]}-{key[1]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def replay(configs: list[Path], loop_dir: Path, log: Path) -> dict[str, Any]:
    """Runs `--replay` in one fresh process and times it as a whole."""
    before = load()
    started = time.monotonic()
    timings = log.with_suffix(".json")
    with log.open("wb") as output:
        subprocess.run(
            [sys.executable, __file__, "--replay-json", str(timings), "--replay", *map(str, configs)],
            check=True,
            cwd=REPO,
            env=stage_env(loop_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    seconds = round(time.monotonic() - started, 1)
    calls: dict[str, Any] = json.loads(timings.read_text())
    return {"seconds": seconds, "load_before": before, "load_after": load(), **calls}


def replay_main(configs: list[str], timings: Path) -> int:
    """In the baseline process: import once, then each stage's main, one after another."""
    started = time.monotonic()
    import sil_stages.cli

    imported = time.monotonic() - started
    calls = []
    for path in configs:
        config = json.loads(Path(path).read_text())
        call_started = time.monotonic()
        code = sil_stages.cli.main([config["stage"], "--config", f"@{path}"])
        if code != 0:
            print(f"{path}: exit code {code}", file=sys.stderr)
            return code
        seconds = round(time.monotonic() - call_started, 1)
        calls.append({"iteration": config["iteration"], "stage": config["stage"], "seconds": seconds})
    timings.write_text(json.dumps({"import_seconds": round(imported, 2), "calls": calls}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=Path, default=REPO / "examples" / "arithmetic" / "loop.yaml")
    parser.add_argument(
        "--base-model-script", type=Path, default=REPO / "examples" / "arithmetic" / "make_base_model.py"
    )
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--runners", default="fork-server,subprocess", help="comma-separated: fork-server, subprocess")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "overhead.json")
    parser.add_argument("--replay", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--replay-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        return replay_main(args.replay, args.replay_json)
    runners = [name.strip() for name in args.runners.split(",") if name.strip()]
    unknown = [name for name in runners if name not in RUNNERS]
    if unknown or not runners:
        parser.error(f"--runners: {unknown or 'none'}; choose from {', '.join(RUNNERS)}")

    subprocess.run([sys.executable, str(args.base_model_script)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    loop_file = args.loop.resolve()
    result: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "loop": str(args.loop),
        "iterations": args.iterations,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="sil-overhead-") as tmp:
        stores = {name: Path(tmp) / name / "store" for name in runners}
        seconds: dict[str, dict[tuple[int, str], float]] = {}
        for number, name in enumerate(runners):
            loop = loop_copy(loop_file, stores[name], args.iterations, name)
            try:
                result["runs"][name] = sil_run(loop, name)
            finally:
                loop.unlink(missing_ok=True)
            status = json.loads((stores[name] / "status.json").read_text())
            seconds[name] = stage_seconds(status)
            if number == 0:
                configs = replayed_configs(stores[name], Path(tmp) / "replay" / "store")
                result["baseline"] = replay(configs, loop_file.parent, Path(tmp) / "replay.log")
    baseline = result["baseline"]
    for name in runners:
        result["runs"][name]["ratio"] = round(result["runs"][name]["seconds"] / baseline["seconds"], 2)

    table = Table(title=f"sil run vs one process: {args.loop.name}, {args.iterations} iterations")
    for column in ("iter", "stage", *(f"{name} s" for name in runners), "one process s"):
        table.add_column(column, justify="right")
    for call in baseline["calls"]:
        key = (call["iteration"], call["stage"])
        table.add_row(
            str(key[0]),
            key[1],
            *(str(seconds[name].get(key, "-")) for name in runners),
            str(call["seconds"]),
        )
    console = Console(width=140)
    console.print(table)
    console.print(
        f"one process: {baseline['seconds']} s in all ({baseline['import_seconds']} s of it importing sil_stages); "
        f"load average {baseline['load_before']} before, {baseline['load_after']} after; "
        f"{result['machine']}"
    )
    for name in runners:
        run = result["runs"][name]
        verdict = "meets" if run["ratio"] <= TARGET_RATIO else "misses"
        console.print(
            f"sil run ({name}): {run['seconds']} s = [bold]{run['ratio']}x[/] the one process ({verdict} "
            f"<= {TARGET_RATIO}x); load average {run['load_before']} before, {run['load_after']} after"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m sil_stages <stage> --config <json | @path>`: parse, check for a manifest, run, report.

Exit codes are part of the contract with the runners: 0 done (or already done: a manifest exists, nothing
runs), 2 the config or an input is wrong (one line on stderr names the field or URI and what to do; retrying
will not help), 1 anything else (a traceback follows; a retry may help), 143 stopped by SIGTERM after saving a
trainer checkpoint (optimize with checkpointEverySteps; a retry resumes from it). A stage run as several processes
(`sil_stages.optimize.launcher`) exits with its ranks' code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sil_stages.core.contract import STAGES, Manifest, parse_stage_config
from sil_stages.core.errors import EXIT_INPUT_REJECTED, StageInputError
from sil_stages.core.manifest import is_finished
from sil_stages.core.store import Store
from sil_stages.optimize.launcher import record_exit_code
from sil_stages.optimize.trainer_checkpoints import EXIT_STOPPED, TrainingStopped

log = logging.getLogger("sil_stages")

EXIT_OK = 0
EXIT_FAILED = 1


def read_config_argument(value: str) -> dict[str, Any]:
    """The `--config` value: inline JSON, or `@path` to a JSON file."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as error:
            raise StageInputError(f"--config: cannot read {path} ({error.strerror})") from error
    try:
        data = json.loads(value)
    except json.JSONDecodeError as error:
        raise StageInputError(f"--config: not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(data, dict):
        raise StageInputError("--config: must be a JSON object")
    return data


def describe_validation_error(error: ValidationError, stage: str) -> str:
    """One line naming the first bad field (dotted, as in the config) and what pydantic expected."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    if location[:1] == ["config"]:
        location = location[1:]
    if location[:1] == [stage]:
        location = location[1:]
    field = ".".join(location) or "config"
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"config field `{field}`: {first['msg']}; fix it in the {stage} config{suffix}"


def _runner(stage: str) -> Callable[[Any, Store], Manifest | None]:
    module = importlib.import_module(f"sil_stages.{stage}.stage")
    run: Callable[[Any, Store], Manifest | None] = module.run
    return run


def _relauncher(stage: str) -> Callable[[Any, Store, Sequence[str]], int | None] | None:
    """A stage's `relaunch(config, store, arguments)`, which may run it as several processes (optimize)."""
    module = importlib.import_module(f"sil_stages.{stage}.stage")
    relaunch: Callable[[Any, Store, Sequence[str]], int | None] | None = getattr(module, "relaunch", None)
    return relaunch


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    record_exit_code(code, os.environ)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sil_stages", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", required=True, help="the stage config as JSON, or @path to a JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"sil_stages {args.stage}: %(message)s", force=True
    )

    try:
        raw = read_config_argument(args.config)
        raw.setdefault("stage", args.stage)
        if raw["stage"] != args.stage:
            stage = raw["stage"]
            raise StageInputError(f"config field `stage`: is {stage!r}, the command runs {args.stage!r}")
        config = parse_stage_config(raw)
    except ValidationError as error:
        log.error("%s", describe_validation_error(error, args.stage))
        return EXIT_INPUT_REJECTED
    except StageInputError as error:
        log.error("%s", error)
        return EXIT_INPUT_REJECTED

    store = Store(config.storage)
    try:
        if is_finished(store, config.output_uri):
            log.info("already finished: %s has a manifest; nothing to do", config.output_uri)
            return EXIT_OK
        relaunch = _relauncher(args.stage)
        if relaunch is not None:
            code = relaunch(config, store, [args.stage, "--config", args.config])
            if code is not None:
                return code
        manifest = _runner(args.stage)(config, store)
    except StageInputError as error:
        log.error("%s", error)
        return EXIT_INPUT_REJECTED
    except TrainingStopped as error:
        log.error("%s", error)
        return EXIT_STOPPED
    except Exception:
        log.exception("failed")
        return EXIT_FAILED
    if manifest is None:
        log.info("done; global rank 0 writes the manifest")
        return EXIT_OK
    log.info("finished in %.1fs: %s", manifest.duration_seconds, json.dumps(manifest.metrics, sort_keys=True))
    return EXIT_OK

"""Standard benchmarks as regression guards: lm-evaluation-harness tasks run on candidate and champion.

A dataset entry with `harness` names lm-eval tasks defined by the task YAMLs of one folder (`includePath`). Each
task is scored on both models with lm-eval's own prompts and metrics (`simple_evaluate` on an `HFLM` wrapping the
model evaluate already loaded), and its per-sample log gives one value per item and model: paired by the item's
`doc_id`, they go through the same paired bootstrap and McNemar test as the JSONL datasets (`significance.compare`).
Each task is then a dataset of its own in the series (`dataset=<task>`), so a gate such as
`selfimprove_eval_delta_ci_high{dataset="<task>"} >= -0.05` ("not clearly worse") guards against regressions.

The rules, all checked before any model runs (`prepare_suites`), each error naming its field:
- tasks come from `includePath` only (lm-eval's built-in task index is not searched: its tasks download their data),
  and read local files only: a task's `dataset_path` must be a local builder (json, csv, parquet, text, arrow) or an
  existing folder; relative `data_files` are relative to `includePath`. The datasets library and the hub client
  are switched to offline mode while tasks load and run, so nothing is downloaded;
- a task, not a group (list a group's tasks instead);
- the metric compared (`metric`, else the task's first) must be a per-sample mean that is better higher
  (`aggregation: mean`, `higher_is_better: true`): then the mean of the per-sample values is the task's score and
  their paired difference is the difference of the two scores. A corpus-level metric (bleu, chrf, ter, perplexity,
  bits_per_byte, matthews_corrcoef, f1 aggregated over the corpus, ...) has no per-sample score to pair, and a
  lower-is-better one would turn the "no regression" gate around: both are refused.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sil_stages.core.chat import lm_eval_arguments
from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import Harness
from sil_stages.core.store import Store, StoreError, is_remote, join, local_path

LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})
"""`dataset_path` values that read local files (the datasets library's packaged builders)."""
DEFAULT_FILTER = "none"
"""lm-eval's filter name when a task defines no filter_list."""
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval task of a harness entry, and what of it is compared."""

    name: str
    metric: str
    filter: str
    """The filter whose per-sample values are compared: the task's first (lm-eval's `none` without filters)."""


@dataclass(frozen=True)
class HarnessSuite:
    """One `datasets[i]` harness entry, validated: its tasks, and the local folder they are read from."""

    entry: str
    field: str
    """`datasets[<i>].harness`, for errors."""
    settings: Harness
    folder: Path
    tasks: tuple[HarnessTask, ...]


@dataclass(frozen=True)
class TaskRun:
    """One model on one task: lm-eval's score and the per-item values it is the mean of."""

    score: float
    per_item: dict[int, float]
    """doc_id -> the item's value of the compared metric."""
    example: str = ""
    """The first item's prompt as lm-eval gave it to the model (in the chat template in a conversational loop)."""


def first_prompt(sample: Mapping[str, Any]) -> str:
    """The prompt text of one per-sample log entry: the first string of its `arguments` (a context, continuation
    pair per request for log-likelihood tasks; context and generation settings for generation tasks)."""

    def first(value: Any) -> str | None:
        if isinstance(value, str):
            return value
        items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
        for item in items:
            found = first(item)
            if found is not None:
                return found
        return None

    return first(sample.get("arguments")) or ""


def comparability_problem(metric: str, aggregation: str, higher_is_better: bool | None) -> str | None:
    """Why a metric cannot be paired per item and gated on "no regression"; None when it can."""
    if aggregation != "mean":
        return (
            f"metric {metric} aggregates by {aggregation}, not mean: a corpus-level metric has no per-item score to "
            "pair; pick a per-item metric (acc, acc_norm, exact_match, ...)"
        )
    if higher_is_better is not True:
        return f"metric {metric} is not higher-is-better: the no-regression gate reads a higher score as better"
    return None


def per_item_values(samples: Sequence[Mapping[str, Any]], metric: str, filter_name: str) -> dict[int, float]:
    """doc_id -> the metric's value, from lm-eval's per-sample log of one task (the records of the given filter)."""
    values: dict[int, float] = {}
    for sample in samples:
        if sample.get("filter", DEFAULT_FILTER) != filter_name:
            continue
        doc_id = int(sample["doc_id"])
        if metric not in sample:
            raise ValueError(f"the per-sample log of item {doc_id} has no {metric} value")
        value = float(sample[metric])
        if not math.isfinite(value):
            raise ValueError(f"the per-sample log of item {doc_id} has {metric} = {value}")
        if doc_id in values:
            raise ValueError(f"the per-sample log holds item {doc_id} twice")
        values[doc_id] = value
    return values


def paired_values(candidate: TaskRun, champion: TaskRun, *, task: str) -> tuple[list[float], list[float]]:
    """The two models' values of the same items, in doc_id order: the input of `significance.compare`."""
    if candidate.per_item.keys() != champion.per_item.keys():
        only = sorted(candidate.per_item.keys() ^ champion.per_item.keys())[:5]
        raise ValueError(f"harness task {task}: candidate and champion were scored on different items ({only} ...)")
    if not candidate.per_item:
        raise ValueError(f"harness task {task}: no items were scored")
    items = sorted(candidate.per_item)
    return [candidate.per_item[i] for i in items], [champion.per_item[i] for i in items]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """The hub client and the datasets library offline: a task that reaches for the network fails instead."""
    import datasets.config
    import huggingface_hub.constants

    saved_env = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    os.environ.update({name: "1" for name in OFFLINE_VARIABLES})
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def in_folder(folder: Path) -> Iterator[None]:
    """Offline, in the task folder: lm-eval resolves relative `data_files` against the working directory."""
    with offline(), contextlib.chdir(folder):
        yield


def task_folder(store: Store, uri: str, *, field: str, scratch: Path) -> Path:
    """The local folder of the task YAMLs: the folder itself for file://, a download of the prefix for s3://."""
    if not is_remote(uri):
        try:
            path = local_path(uri)
        except StoreError as error:
            raise StageInputError(f"{field}: {uri} is not a folder URI; use file:// or s3://") from error
        if not path.is_dir():
            raise StageInputError(f"{field}: no such folder {path}")
        return path
    target = Path(tempfile.mkdtemp(prefix="harness-", dir=scratch))
    try:
        names = list(store.list_files(uri))
        for name in names:
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(store.read_bytes(join(uri, name)))
    except StoreError as error:
        shutil.rmtree(target, ignore_errors=True)
        raise StageInputError(f"{field}: cannot download {uri} ({error})") from error
    if not names:
        shutil.rmtree(target, ignore_errors=True)
        raise StageInputError(f"{field}: {uri} holds no files")
    return target


def prepare_suites(store: Store, config: EvaluateConfig, *, scratch: Path) -> list[HarnessSuite]:
    """Every harness entry of `config.datasets`, its tasks loaded (from local files) and checked: the errors a run
    would otherwise hit after a model was loaded."""
    suites: list[HarnessSuite] = []
    seen = {dataset.name: f"datasets[{i}].name" for i, dataset in enumerate(config.datasets) if dataset.uri}
    for index, dataset in enumerate(config.datasets):
        if dataset.harness is None:
            continue
        field = f"datasets[{index}].harness"
        folder = task_folder(store, dataset.harness.include_path, field=f"{field}.includePath", scratch=scratch)
        tasks = _load_tasks(dataset.harness, folder, field=field)
        for position, task in enumerate(tasks):
            if task.name in seen:
                raise StageInputError(
                    f"{field}.tasks[{position}]: {task.name} is also {seen[task.name]}; each task is a dataset label "
                    "of its own and must be unique"
                )
            seen[task.name] = f"{field}.tasks[{position}]"
        suites.append(HarnessSuite(dataset.name, field, dataset.harness, folder, tasks))
    return suites


def _task_manager(folder: Path) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False)


def _load_tasks(settings: Harness, folder: Path, *, field: str) -> tuple[HarnessTask, ...]:
    from lm_eval.tasks import get_task_dict

    manager = _task_manager(folder)
    groups = set(manager.all_groups)
    for position, name in enumerate(settings.tasks):
        if name in groups:
            raise StageInputError(f"{field}.tasks[{position}]: {name} is a group; list its tasks instead")
        if name not in manager.all_tasks:
            known = ", ".join(manager.all_tasks) or "none"
            raise StageInputError(
                f"{field}.tasks[{position}]: no task {name} in includePath {folder} (its YAMLs define: {known})"
            )
    if len(set(settings.tasks)) != len(settings.tasks):
        raise StageInputError(f"{field}.tasks: a task is named twice")
    loaded: dict[str, Any] = {}
    for position, name in enumerate(settings.tasks):
        entry = manager._index[name]  # the YAML as parsed by the index, before any data is read
        _check_local(
            str((entry.cfg or {}).get("dataset_path", "json")), name, folder, field=f"{field}.tasks[{position}]"
        )
        try:
            with in_folder(folder):
                loaded.update(get_task_dict([name], manager))
        except Exception as error:  # lm-eval raises what the datasets library or its YAML parsing raised
            raise StageInputError(
                f"{field}.tasks[{position}]: task {name} cannot be loaded from local files: {error}"
            ) from error
    return tuple(
        _checked_task(loaded[name], name, settings, folder, field=f"{field}.tasks[{position}]")
        for position, name in enumerate(settings.tasks)
    )


def _check_local(dataset_path: str, name: str, folder: Path, *, field: str) -> None:
    """A task reads local files only: a packaged builder over data_files, or a folder under includePath."""
    if dataset_path not in LOCAL_BUILDERS and not (dataset_path and (folder / dataset_path).is_dir()):
        raise StageInputError(
            f"{field}: task {name} reads dataset_path {dataset_path!r}; only local files are read (dataset_path: "
            f"one of {sorted(LOCAL_BUILDERS)} with dataset_kwargs.data_files, or a folder under includePath)"
        )


def _checked_task(task: Any, name: str, settings: Harness, folder: Path, *, field: str) -> HarnessTask:
    _check_local(str(task.config.dataset_path or ""), name, folder, field=field)
    aggregations: dict[str, Any] = task.aggregation()
    metric = settings.metric or next(iter(aggregations), "")
    if metric not in aggregations:
        metrics = ", ".join(aggregations) or "none"
        raise StageInputError(f"{field}: task {name} has no metric {metric!r} (it has: {metrics}); see harness.metric")
    aggregation = aggregations[metric]
    aggregation_name = getattr(aggregation, "__name__", str(aggregation))
    problem = comparability_problem(metric, aggregation_name, task.higher_is_better().get(metric))
    if problem is not None:
        raise StageInputError(f"{field}: task {name}: {problem}")
    filters = getattr(task, "_filters", None) or []
    filter_name = str(getattr(filters[0], "name", DEFAULT_FILTER)) if filters else DEFAULT_FILTER
    return HarnessTask(name=name, metric=metric, filter=filter_name)


def run_suite(
    suite: HarnessSuite,
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int,
    seed: int,
    chat: bool = False,
    system_prompt: str | None = None,
) -> dict[str, TaskRun]:
    """Run the suite's tasks on one loaded model (lm-eval's HFLM around it): task -> its score and per-item values.

    `chat`: the loop is conversational (spec.model.chatTemplate), so lm-eval renders each task prompt in the
    tokenizer's chat template, with `system_prompt` as the system turn, as every other stage's prompts are
    (`sil_stages.core.chat`); a text loop's tasks get lm-eval's raw prompts."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    settings = suite.settings
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size or batch_size)
    with in_folder(suite.folder):
        outcome = simple_evaluate(
            model=lm,
            tasks=[task.name for task in suite.tasks],
            task_manager=_task_manager(suite.folder),
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            log_samples=True,
            bootstrap_iters=0,  # lm-eval's own stderr is not used: the paired interval is ours
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            **lm_eval_arguments(chat, system_prompt),
        )
    if outcome is None:  # simple_evaluate returns None on non-zero ranks only
        raise RuntimeError("lm-eval returned no results")
    runs: dict[str, TaskRun] = {}
    for task in suite.tasks:
        samples = outcome["samples"][task.name]
        per_item = per_item_values(samples, task.metric, task.filter)
        score = float(outcome["results"][task.name][f"{task.metric},{task.filter}"])
        runs[task.name] = TaskRun(score=score, per_item=per_item, example=first_prompt(samples[0]) if samples else "")
    return runs

"""What evaluate reads from the store besides the models: the held-out datasets, this iteration's acquire samples
and the selected training data.

The datasets are what the models are scored on; the acquire samples give the diversity of what the candidate
learned from (`selfimprove_acquire_*`), and the training data the n-grams the contamination guard looks for in the
held-out prompts. Each reader checks its input and names the config field at fault.
"""

from __future__ import annotations

from sil_stages.core.chat import check_prompt_records, content_text
from sil_stages.core.contract import EvalDatasetConfig, EvaluateConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.records import Record, read_jsonl
from sil_stages.core.seeding import derive_seed
from sil_stages.core.store import Store
from sil_stages.evaluate.guards import TrainingIndex, diversity


def load_datasets(store: Store, datasets: tuple[EvalDatasetConfig, ...]) -> dict[str, list[Record]]:
    """The held-out JSONL datasets by name, in config order; each record holds a `prompt` or `messages`. Harness
    entries are not read here (`harness.prepare_suites`)."""
    if not datasets or datasets[0].uri is None:
        raise StageInputError(
            "datasets[0]: name a held-out JSONL dataset with prompt and answer (uri) first; harness entries follow it"
        )
    loaded: dict[str, list[Record]] = {}
    for index, dataset in enumerate(datasets):
        if dataset.uri is None:
            continue
        field_name = f"datasets[{index}].uri"
        records = read_jsonl(store, dataset.uri, field=field_name)
        if not records:
            raise StageInputError(f"{field_name}: {dataset.uri} holds no records")
        check_prompt_records(records, uri=dataset.uri, field=field_name)
        loaded[dataset.name] = records
    return loaded


def acquire_diversity(store: Store, config: EvaluateConfig) -> dict[str, float]:
    """Diversity of this iteration's acquire samples (the champion's own generations the candidate learns from)."""
    if config.samples_uri is None or not store.exists(config.samples_uri):
        return {}
    records = read_jsonl(store, config.samples_uri, field="samples_uri")
    texts = [str(text) for record in records for text in record.get("completions", [])]
    spread = diversity(texts, seed=derive_seed(config.seed, config.iteration, "acquire-diversity"))
    return {"distinct_1": spread.distinct_1, "distinct_2": spread.distinct_2, "self_bleu": spread.self_bleu}


def training_index(store: Store, config: EvaluateConfig) -> TrainingIndex | None:
    """The n-grams of the selected training data's prompts and completions; None when there is none to check."""
    if config.train_uri is None or not store.exists(config.train_uri):
        return None
    records = read_jsonl(store, config.train_uri, field="train_uri")
    keys = ("prompt", "completion", "chosen", "rejected")
    texts = [content_text(record.get(key, "")) for record in records for key in keys]
    return TrainingIndex([text for text in texts if text], n=config.contamination.ngram)

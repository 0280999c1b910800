"""JSONL records read from and written to the store.

Every data file a stage reads or writes (prompts, samples, SFT data, eval sets) is JSON Lines: one object a
line, streamable, readable with `head`, and loadable by `datasets` as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sil_stages.core.errors import StageInputError
from sil_stages.core.store import Store, StoreError

Record = dict[str, Any]


def read_jsonl(store: Store, uri: str, *, field: str) -> list[Record]:
    """Reads every record; `field` names the config field that gave `uri`, for the error message."""
    try:
        text = store.read_text(uri)
    except StoreError as error:
        raise StageInputError(f"{field}: cannot read {uri} ({error}); check the URI") from error
    return parse_jsonl(text, uri=uri, field=field)


def parse_jsonl(text: str, *, uri: str, field: str) -> list[Record]:
    """The records of JSONL `text` read from `uri`; an error names the line and the config field."""
    records: list[Record] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise StageInputError(f"{field}: {uri} line {number} is not JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise StageInputError(f"{field}: {uri} line {number} is not a JSON object")
        records.append(record)
    return records


def require_field(records: Iterable[Record], name: str, *, uri: str, field: str) -> None:
    """Fails with one line naming the record field that is missing, the file and the config field."""
    for number, record in enumerate(records, start=1):
        if name not in record:
            raise StageInputError(f"{field}: record {number} of {uri} has no `{name}` field; every record needs one")


def to_jsonl(records: Iterable[Record]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)

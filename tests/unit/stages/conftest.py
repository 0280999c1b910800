"""Fixtures for the stage tests: a tiny causal LM built from a config, and stage configs in a temp store.

No hub download: the tokenizer is a character-level WordLevel model trained on the fly with `tokenizers`, the
model a 2-layer Llama with hidden size 32. Random weights are enough to test what the stages write; the
optimize test checks that training moves them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import tiny_llama

ALPHABET = "0123456789+= abcdefghijklmnopqrstuvwxyz.\n"


def build_tiny_model(directory: Path) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, set_seed

    set_seed(0)
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    raw.decoder = decoders.Fuse()
    raw.train_from_iterator([ALPHABET], trainer=trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"]))
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    tiny_llama(tokenizer, max_positions=64).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model directory, shared by the session (read-only: tests never write into it)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


StageConfig = Callable[..., dict[str, Any]]


@pytest.fixture
def stage_config(tmp_path: Path) -> StageConfig:
    """`stage_config("acquire", model_uri=...)`: a config dict for one stage of iteration 1 in a temp store."""
    storage = (tmp_path / "store").as_uri()

    def make(stage: str, *, iteration: int = 1, **fields: Any) -> dict[str, Any]:
        return {
            "stage": stage,
            "loop": "test-loop",
            "namespace": "test-ns",
            "iteration": iteration,
            "storage": {"uri": storage},
            "output_uri": f"{storage}/iterations/{iteration}/{stage}",
            "seed": 0,
            **fields,
        }

    return make


def output_dir(config: dict[str, Any]) -> Path:
    return Path(str(config["output_uri"]).removeprefix("file://"))


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A fake Pushgateway: its address, and the (method, path, body) of every request it received."""
    received: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()

"""A chat loop through a real `sil run` with each method: conversational prompts and the chat template everywhere.

The model is examples/arithmetic-chat's base model (a tiny Llama with a byte-level BPE ChatML tokenizer, pretrained
on chat-formatted sums; built once, then cached in examples/arithmetic-chat/.base-model). Each test runs one short
iteration (200 prompts) and checks what every stage wrote: acquire's samples carry the conversation (system prompt
first) and the assistant turns' content without template tokens, select's training data is conversational in the
method's shape, optimize trained on it, and evaluate scored the held-out text prompts through the same template.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_local_loop import REPO
from tests.e2e.test_methods_loop import run_one_iteration

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHAT = REPO / "examples" / "arithmetic-chat"
SYSTEM_PROMPT = "You add two numbers. Answer with the sum only."
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
METHODS: dict[str, dict[str, Any]] = {
    "sft": {},
    "dpo": {
        "select": {"pairs": {"minMargin": 1.0}},
        "optimize": {
            "method": "dpo",
            "dpo": {"lossType": ["sigmoid", "sft"], "beta": 0.1},
            "hyperparameters": {"learningRate": 5.0e-4, "epochs": 1, "batchSize": 32, "maxLength": 64},
        },
    },
    "grpo": {
        "select": {"keep": {"difficulty": {"minPassRate": 0.0, "maxPassRate": 1.0, "exclusive": True}}},
        "optimize": {
            "method": "grpo",
            "grpo": {"numGenerations": 4, "beta": 0.0, "lossType": "dapo", "maxCompletionLength": 6},
            "hyperparameters": {"learningRate": 2.0e-4, "epochs": 1, "batchSize": 32},
        },
    },
}
SHAPES = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"), "grpo": ("prompt", "record")}


@pytest.fixture(scope="module")
def chat_base_model() -> Path:
    subprocess.run([sys.executable, str(CHAT / "make_base_model.py")], check=True, cwd=REPO)
    return CHAT / ".base-model"


def chat_loop(tmp_path: Path, base_model: Path, changes: dict[str, Any]) -> Path:
    """examples/arithmetic-chat's loop, one iteration of 200 prompts, absolute paths, `changes` laid over it."""
    document: dict[str, Any] = yaml.safe_load((CHAT / "loop.yaml").read_text())
    spec = document["spec"]
    spec["model"]["uri"] = str(base_model)
    spec["storage"] = {"uri": "./store"}
    spec["maxIterations"] = 1
    spec["acquire"]["prompts"] = {"uri": str(CHAT / "data" / "train_prompts.jsonl"), "perIteration": 200}
    spec["evaluate"]["datasets"] = [{"name": "heldout", "uri": str(CHAT / "data" / "heldout.jsonl")}]
    spec["optimize"]["hyperparameters"]["epochs"] = 1
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    (tmp_path / "arithmetic.py").write_text((CHAT / "arithmetic.py").read_text())
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("method", list(METHODS))
def test_a_chat_loop_runs_an_iteration_with_each_method_on_conversational_data(
    tmp_path: Path, chat_base_model: Path, method: str
) -> None:
    iteration = run_one_iteration(tmp_path, chat_loop(tmp_path, chat_base_model, METHODS[method]))
    assert iteration["decision"] in ("Promoted", "Rejected")
    store = tmp_path / "store" / "iterations" / "1"

    samples = _rows(store / "acquire" / "samples.jsonl")
    assert len(samples) == 200
    system = {"role": "system", "content": SYSTEM_PROMPT}
    assert all(s["messages"][0] == system and s["messages"][-1]["content"] == s["prompt"] for s in samples)
    completions = [c for s in samples for c in s["completions"]]
    assert not any(token in c for c in completions for token in TEMPLATE_TOKENS)
    answers = sum(c.strip().isdigit() for c in completions)
    assert answers > 0.9 * len(completions), "generation stops at <|im_end|>: the answer alone, no further turns"

    train = _rows(store / "select" / "train.jsonl")
    assert train, "select kept data"
    for row in train:
        assert tuple(row) == SHAPES[method]
        assert row["prompt"][0] == system and row["prompt"][-1]["role"] == "user"
        for key in ("completion", "chosen", "rejected"):
            if key in row:
                [answer] = row[key]
                assert answer["role"] == "assistant"
                assert not any(token in answer["content"] for token in TEMPLATE_TOKENS)

    optimize = json.loads((store / "optimize" / "_manifest.json").read_text())["metrics"]
    assert optimize["train_examples"] == len(train)
    evaluate = json.loads((store / "evaluate" / "_manifest.json").read_text())["metrics"]
    assert 0.0 < evaluate["heldout/champion/score"] < 1.0, "the base chat model answers some held-out sums"

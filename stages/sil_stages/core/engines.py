"""Which generation engine a stage config's `engine` names, loaded: transformers here, vLLM in the GPU image.

Its own module so that `generation` (the engine interface and the transformers engine) and `vllm_engine` (which
implements that interface) import in one direction only.
"""

from __future__ import annotations

from sil_stages.core.generation import GenerationEngine, TransformersEngine
from sil_stages.core.settings import ChatFormat, EngineName


def make_engine(
    kind: EngineName, model_path: str, *, batch_size: int, progress: str, chat: ChatFormat | None = None
) -> GenerationEngine:
    """The engine named by a stage config's `engine` field, loaded from a resolved model path; it formats prompts
    as `chat` (the loop's spec.model chat settings) says, checked against the tokenizer before the model loads."""
    from sil_stages.core.chat import PromptFormat
    from sil_stages.core.models import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    prompt_format = PromptFormat.of(tokenizer, chat or ChatFormat(), model=model_path)
    if kind == "vllm":
        from sil_stages.core.vllm_engine import VllmEngine  # vllm only in the GPU image

        return VllmEngine(model_path, prompt_format)
    from sil_stages.core.models import load_model

    return TransformersEngine(
        load_model(model_path), tokenizer, batch_size=batch_size, progress=progress, chat=chat, name=model_path
    )

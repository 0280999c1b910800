"""The vLLM engine: the same `GenerationEngine` interface, for GPU stage images.

Kept thin on purpose (one `LLM`, one `SamplingParams(n=...)`) and imported only when a config says
`engine: vllm`, so that CPU images and tests never need vllm installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sil_stages.core.chat import Prompt, PromptFormat
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import SamplingRequest
from sil_stages.core.settings import ChatFormat


class VllmEngine:
    def __init__(self, model_path: str, prompt_format: PromptFormat | None = None, **llm_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as error:
            raise StageInputError(
                "engine: vllm is not installed in this image; use engine: transformers or the GPU stage image"
            ) from error
        self._llm = LLM(model=model_path, **llm_kwargs)
        self.format = prompt_format or PromptFormat.of(self._llm.get_tokenizer(), ChatFormat(), model=model_path)
        """The one formatting of `sil_stages.core.chat` (make_engine's, from the same tokenizer vLLM loads)."""

    def generate(self, prompts: Sequence[Prompt], request: SamplingRequest) -> list[list[str]]:
        from vllm import SamplingParams

        greedy = request.temperature <= 0.0
        params = SamplingParams(
            n=request.n,
            temperature=0.0 if greedy else request.temperature,
            top_p=1.0 if greedy else request.top_p,
            max_tokens=request.max_new_tokens,
            seed=request.seed,
            stop_token_ids=list(self.format.stop_ids),
            skip_special_tokens=True,
        )
        outputs = self._llm.generate([self.format.text(prompt) for prompt in prompts], params)
        return [[choice.text for choice in output.outputs] for output in outputs]

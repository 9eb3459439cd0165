"""kangaroo-edge: Kangaroo self-speculative decoding on llama.cpp's ggml."""

from . import _native

if _native.ggml_version() != _native.COMPILED_GGML_VERSION:
    raise ImportError(
        f"kangaroo_edge was compiled against ggml {_native.COMPILED_GGML_VERSION} but ggml "
        f"{_native.ggml_version()} is installed (llama-cpp-python changed?): reinstall kangaroo-edge"
    )
_native.set_verbose(False)

from .llm import KangarooLM  # noqa: E402
from .types import GenerationChunk, GenerationResult, GenerationStats, SamplingParams  # noqa: E402

EngineError = _native.EngineError

__all__ = ["KangarooLM", "SamplingParams", "GenerationResult", "GenerationChunk", "GenerationStats", "EngineError"]
__version__ = "0.1.0"

"""What the server's responses add to the library's OpenAI shapes (openai_shapes.py, the one
shaper): server-sent events, the model list, and llama-server's POST /completion bodies.

One Shaper per request holds the id, creation time and model name that all of its chunks share.
"""

from __future__ import annotations

import json
import time
from typing import Optional

from .. import openai_shapes
from ..decoding import DraftOptions
from ..openai_shapes import timings
from ..types import GenerationStats
from .validation import CHAT, NATIVE_COMPLETION, GenerationRequest

SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


def sse_event(obj: dict) -> bytes:
    """One server-sent event, as OpenAI streams them: a `data: {json}` line and a blank line."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "kangaroo-edge"}


def model_list(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [model_card(model_id, created)]}


class Shaper(openai_shapes.Shaper):
    """openai_shapes.Shaper for one request, and for llama-server's POST /completion its own shapes."""

    def __init__(self, request: GenerationRequest):
        super().__init__(request.endpoint == CHAT, request.model, int(time.time()), request.tools,
                         request.include_usage)
        self.native = request.endpoint == NATIVE_COMPLETION
        self.sends_done = not self.native  # OpenAI's streams end with `data: [DONE]`, llama.cpp's do not

    def whole(self, text: str, finish_reason: str, stats: GenerationStats, draft: DraftOptions) -> dict:
        if self.native:
            return self._native(text, finish_reason, stats, draft)
        return super().whole(text, finish_reason, stats, draft)

    def last_chunks(self, finish_reason: str, stats: GenerationStats, draft: DraftOptions) -> list[dict]:
        if self.native:
            return [self._native("", finish_reason, stats, draft)]
        return super().last_chunks(finish_reason, stats, draft)

    def chunk(self, text: str, finish_reason: Optional[str] = None, first: bool = False) -> dict:
        if self.native:
            return {"index": 0, "content": text, "id_slot": 0, "stop": False}
        return super().chunk(text, finish_reason, first)

    def _native(self, text: str, finish_reason: str, stats: GenerationStats, draft: DraftOptions) -> dict:
        """llama-server's /completion body, and its stream's last event (with the text sent before)."""
        return {"index": 0, "content": text, "id_slot": 0, "stop": True, "model": self.model,
                "tokens_predicted": stats.predicted_n, "tokens_evaluated": stats.prompt_tokens,
                "tokens_cached": stats.cache_n, "truncated": False,
                # no stop_type: the engine does not tell llama.cpp's "eos" from "word" (a stop string)
                "finish_reason": finish_reason, "timings": timings(stats, draft)}

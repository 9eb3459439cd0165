"""Response bodies as OpenAI sends them, plus llama.cpp's `timings` (speed and speculation figures).

One Shaper per request holds the id, creation time and model name that all of its chunks share.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Optional

from ..openai_shapes import assistant_message, tool_call_deltas
from ..tools import ToolCallStream, tool_names
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


class Shaper:
    """The bodies of one request's response: whole (stream false) or chunk by chunk, in OpenAI's
    shapes or, for llama-server's POST /completion, in llama.cpp's."""

    def __init__(self, request: GenerationRequest):
        self.chat = request.endpoint == CHAT
        self.native = request.endpoint == NATIVE_COMPLETION
        self.sends_done = not self.native  # OpenAI's streams end with `data: [DONE]`, llama.cpp's do not
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = request.model
        self.include_usage = request.include_usage
        self.tools = request.tools
        # a chat stream with tools holds back what may be a tool call (tools.ToolCallStream)
        self._calls = ToolCallStream(tool_names(request.tools)) if self.chat and request.tools else None
        self._finish: Optional[str] = None  # "tool_calls" once a stream sent calls

    def _head(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def whole(self, text: str, finish_reason: str, usage_: dict, timings_: dict) -> dict:
        if self.native:
            return self._native(text, finish_reason, usage_, timings_)
        if self.chat:
            message, finish_reason = assistant_message(text, finish_reason, self.tools)
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("chat.completion")
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("text_completion")
        out.update({"choices": [choice], "usage": usage_, "timings": timings_})
        return out

    def last_chunks(self, finish_reason: str, usage_: dict, timings_: dict) -> list[dict]:
        """What a stream sends after the text: the finish reason and timings (and the usage)."""
        if self.native:
            return [self._native("", finish_reason, usage_, timings_)]
        last = self.chunk("", self._finish or finish_reason)
        last["timings"] = timings_
        return [last, self.usage_chunk(usage_)] if self.include_usage else [last]

    def _native(self, text: str, finish_reason: str, usage_: dict, timings_: dict) -> dict:
        """llama-server's /completion body, and its stream's last event (with the text sent before)."""
        return {"index": 0, "content": text, "id_slot": 0, "stop": True, "model": self.model,
                "tokens_predicted": usage_["completion_tokens"], "tokens_evaluated": usage_["prompt_tokens"],
                "tokens_cached": usage_["prompt_tokens_details"]["cached_tokens"], "truncated": False,
                # no stop_type: the engine does not tell llama.cpp's "eos" from "word" (a stop string)
                "finish_reason": finish_reason, "timings": timings_}

    def text_chunks(self, text: str, end: bool = False) -> list[dict]:
        """The chunks a piece of streamed text makes (end: the generation's last piece). With
        tools, a call's text is held back and the calls come whole in one delta at the end."""
        if self._calls is None:
            return [self.chunk(text)] if text else []
        shown = self._calls.add(text)
        out = [self.chunk(shown)] if shown else []
        if end:
            rest, calls = self._calls.finish()
            if rest:
                out.append(self.chunk(rest))
            if calls:
                tool_chunk = self.chunk("")
                tool_chunk["choices"][0]["delta"] = {"tool_calls": tool_call_deltas(calls)}
                out.append(tool_chunk)
                self._finish = "tool_calls"
        return out

    def chunk(self, text: str, finish_reason: Optional[str] = None, first: bool = False) -> dict:
        """A streamed piece. The chat stream's first chunk carries the role, as OpenAI's does."""
        if self.native:
            return {"index": 0, "content": text, "id_slot": 0, "stop": False}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else \
                ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("chat.completion.chunk")
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("text_completion")
        out["choices"] = [choice]
        if self.include_usage:
            out["usage"] = None  # OpenAI: null on every chunk but the last one
        return out

    def usage_chunk(self, usage_: dict) -> dict:
        """stream_options.include_usage: the last chunk, with no choices."""
        out = self._head("chat.completion.chunk" if self.chat else "text_completion")
        out.update({"choices": [], "usage": usage_})
        return out

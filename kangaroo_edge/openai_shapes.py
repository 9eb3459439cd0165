"""Results shaped as OpenAI's completion and chat completion objects: the one shaper of the
library (KangarooLM.create_completion / create_chat_completion) and of the server, which adds
only what is its own (llama-server's POST /completion, server-sent events: server/shapes.py).

Where OpenAI's behaviour is the rule: ids `chatcmpl-...` / `cmpl-...`; a chat stream's first
chunk carries the role "assistant" with empty content; usage on a whole object, and in a stream
only as a last chunk with no choices when stream_options.include_usage asks for it (every
other chunk then has usage null). Every result's last object also carries `timings`: the
generation's record under its own names (llama-server's), not an OpenAI field.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, Optional, Sequence

from .decoding import DraftOptions
from .tools import ToolCallStream, parse_tool_calls, tool_names
from .types import GenerationChunk, GenerationStats, stats_dict


def usage(stats: GenerationStats) -> dict:
    """OpenAI's usage object, from the generation's record."""
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.predicted_n,
            "total_tokens": stats.prompt_tokens + stats.predicted_n,
            # the part of the prompt found in the KV cache and not evaluated again
            "prompt_tokens_details": {"cached_tokens": stats.cache_n}}


def timings(stats: GenerationStats, draft: DraftOptions) -> dict:
    """llama-server's `timings` object: the record's figures under their own names (llama-server's
    where it has the figure: prompt_n, prompt_ms, predicted_n, draft_n ...), and how it drafted."""
    return {**stats_dict(stats), **draft.as_dict()}


def assistant_message(text: str, finish: str, tools: Sequence[dict]) -> tuple[dict, str]:
    """The message and finish reason of an answer; with tools, its calls parsed out of the text."""
    if tools:
        content, calls = parse_tool_calls(text, tool_names(tools))
        if calls:
            return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": text}, finish


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    """A stream's tool_calls delta entries: each call whole, with its index."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


class Shaper:
    """The bodies of one completion (chat or text), whole or chunk by chunk; all of them share
    one id, creation time and model name. tools: the function tools the model was shown (chat)."""

    def __init__(self, chat: bool, model: str, created: int, tools: Sequence[dict] = (), include_usage: bool = False):
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = created
        self.model = model
        self.tools = tools
        self.include_usage = include_usage
        # a chat stream with tools holds back what may be a tool call (tools.ToolCallStream)
        self._calls = ToolCallStream(tool_names(tools)) if chat and tools else None
        self._finish: Optional[str] = None  # "tool_calls" once a stream sent calls

    def _head(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def whole(self, text: str, finish_reason: str, stats: GenerationStats, draft: DraftOptions) -> dict:
        """The response that is not streamed."""
        if self.chat:
            message, finish_reason = assistant_message(text, finish_reason, self.tools)
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("chat.completion")
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            out = self._head("text_completion")
        out.update({"choices": [choice], "usage": usage(stats), "timings": timings(stats, draft)})
        return out

    def first_chunks(self) -> list[dict]:
        """What a stream sends before any text: a chat stream's role."""
        return [self.chunk("", first=True)] if self.chat else []

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

    def last_chunks(self, finish_reason: str, stats: GenerationStats, draft: DraftOptions) -> list[dict]:
        """What a stream sends after the text: the finish reason and timings (and the usage)."""
        last = self.chunk("", self._finish or finish_reason)
        last["timings"] = timings(stats, draft)
        return [last, self.usage_chunk(usage(stats))] if self.include_usage else [last]

    def chunk(self, text: str, finish_reason: Optional[str] = None, first: bool = False) -> dict:
        """A streamed piece. The chat stream's first chunk carries the role, as OpenAI's does."""
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

    def stream(self, chunks: Iterator[GenerationChunk]) -> Iterator[dict]:
        """A library generation's chunks as the stream's objects."""
        yield from self.first_chunks()
        for c in chunks:
            end = c.finish_reason is not None
            yield from self.text_chunks(c.text, end)
            if end:
                yield from self.last_chunks(c.finish_reason, c.stats, c.draft)

    def collect(self, chunks: Iterator[GenerationChunk]) -> dict:
        """A library generation's chunks as the whole response."""
        parts, last = [], None
        for c in chunks:
            parts.append(c.text)
            last = c
        assert last is not None and last.finish_reason is not None
        return self.whole("".join(parts), last.finish_reason, last.stats, last.draft)

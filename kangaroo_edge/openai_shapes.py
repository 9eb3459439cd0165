"""Results shaped as OpenAI's (and llama-cpp-python's) completion and chat completion objects."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

from .tools import ToolCallStream, parse_tool_calls, tool_names
from .decoding import DraftOptions
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


def completion(cid: str, created: int, model: str, text: str, finish: Optional[str],
               stats: Optional[GenerationStats], draft: Optional[DraftOptions]) -> dict:
    """A `text_completion` object (or one streamed chunk of it: stats on the last only)."""
    out = {"id": cid, "object": "text_completion", "created": created, "model": model,
           "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
    if stats is not None:
        out["usage"] = usage(stats)
        out["timings"] = timings(stats, draft)
    return out


def assistant_message(text: str, finish: str, tools: Sequence[dict]) -> tuple[dict, str]:
    """The message and finish reason of an answer; with tools, its calls parsed out of the text."""
    if tools:
        content, calls = parse_tool_calls(text, tool_names(tools))
        if calls:
            return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": text}, finish


def chat_completion(cid: str, created: int, model: str, content: str, finish: str, stats: GenerationStats,
                    draft: DraftOptions, tools: Sequence[dict] = ()) -> dict:
    message, finish = assistant_message(content, finish, tools)
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage(stats), "timings": timings(stats, draft)}


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    """A stream's tool_calls delta entries: each call whole, with its index."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


def chat_chunks(chunks: Iterator[GenerationChunk], cid: str, created: int, model: str,
                tools: Sequence[dict] = ()) -> Iterator[dict]:
    """`chat.completion.chunk` objects: the role first, then content deltas, then the finish.
    With tools, text from a `<tool_call>` on is held back and the calls come whole in one delta."""
    def shape(delta: dict, finish: Optional[str]) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    calls = ToolCallStream(tool_names(tools)) if tools else None
    yield shape({"role": "assistant"}, None)
    for c in chunks:
        text = calls.add(c.text) if calls else c.text
        if text:
            yield shape({"content": text}, None)
        if c.finish_reason is not None:
            finish = c.finish_reason
            if calls:
                rest, found = calls.finish()
                if rest:
                    yield shape({"content": rest}, None)
                if found:
                    yield shape({"tool_calls": tool_call_deltas(found)}, None)
                    finish = "tool_calls"
            final = shape({}, finish)
            final["usage"] = usage(c.stats)
            final["timings"] = timings(c.stats, c.draft)
            yield final

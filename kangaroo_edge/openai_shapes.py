"""Results shaped as OpenAI's (and llama-cpp-python's) completion and chat completion objects."""

from __future__ import annotations

from typing import Iterator, Optional

from .types import GenerationChunk


def usage(stats: dict) -> dict:
    return {"prompt_tokens": stats["n_prompt_tokens"], "completion_tokens": stats["n_tokens"],
            "total_tokens": stats["n_prompt_tokens"] + stats["n_tokens"]}


def completion(cid: str, created: int, model: str, text: str, finish: Optional[str],
               stats: Optional[dict]) -> dict:
    """A `text_completion` object (or one streamed chunk of it: stats on the last only)."""
    out = {"id": cid, "object": "text_completion", "created": created, "model": model,
           "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
    if stats is not None:
        out["usage"] = usage(stats)
        out["stats"] = stats
    return out


def chat_completion(cid: str, created: int, model: str, content: str, finish: str, stats: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage(stats), "stats": stats}


def chat_chunks(chunks: Iterator[GenerationChunk], cid: str, created: int, model: str) -> Iterator[dict]:
    """`chat.completion.chunk` objects: the role first, then content deltas, then the finish."""
    def shape(delta: dict, finish: Optional[str]) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield shape({"role": "assistant"}, None)
    for c in chunks:
        if c.text:
            yield shape({"content": c.text}, None)
        if c.finish_reason is not None:
            final = shape({}, c.finish_reason)
            final["usage"] = usage(c.stats)
            final["stats"] = c.stats
            yield final

"""KangarooLM: load a GGUF model once, then generate, stream, or chat with it.

Layering: the native engine (kangaroo_edge._native) does the compute; this module turns its
steps into text, applies stop conditions, and shapes results like llama-cpp-python's.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

from . import _native
from .chat_template import BuiltinChatTemplate, ChatTemplate, chat_template_for
from .models import resolve_model, shipped_adapter_path
from .types import GenerationChunk, GenerationResult, SamplingParams

DEFAULT_N_CTX = 4096
DEFAULT_MAX_TOKENS = 128
DEVICES = ("auto", "cpu", "gpu")

Prompt = Union[str, Sequence[int]]


class KangarooLM:
    """A loaded model (and, when available, its Kangaroo adapter).

    >>> lm = KangarooLM()                      # the embedded default model
    >>> lm.generate("Hello", max_tokens=16).text
    """

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None,
                 adapter_path: Optional[Union[str, os.PathLike]] = None,
                 n_ctx: int = DEFAULT_N_CTX, n_threads: Optional[int] = None,
                 device: str = "auto", verbose: bool = False, chat_template: Optional[str] = None):
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not 1 <= n_ctx <= 1 << 20:
            raise ValueError(f"n_ctx must be an integer in [1, 1048576], got {n_ctx!r}")
        if n_threads is not None and (not isinstance(n_threads, int) or not 1 <= n_threads <= 1024):
            raise ValueError(f"n_threads must be None or an integer in [1, 1024], got {n_threads!r}")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self.model_path: Path = resolve_model(model_path)
        if adapter_path is None:
            adapter_path = shipped_adapter_path(model_path)  # the default model or a known name
        else:
            adapter_path = Path(adapter_path)
            if not adapter_path.is_file():
                raise FileNotFoundError(f"adapter file not found: {adapter_path}")
        _native.set_verbose(verbose)
        start = time.perf_counter()
        self._engine: Optional[_native.Engine] = _native.Engine(str(self.model_path), n_ctx, n_threads or 0, device)
        self._lock = threading.Lock()
        self.adapter_path: Optional[Path] = None
        if adapter_path is not None:
            self.load_adapter(adapter_path)
        self.load_seconds = time.perf_counter() - start
        # chat_template: a llama.cpp built-in name ("gemma", "chatml", ...) or a Jinja source,
        # for models whose GGUF has none (or to override it); None: the GGUF's own
        self._chat_template_override = chat_template
        self._chat_template: Optional[Union[ChatTemplate, BuiltinChatTemplate]] = None

    # ---- model description -------------------------------------------------------------

    @property
    def engine(self) -> "_native.Engine":
        if self._engine is None:
            raise RuntimeError("this KangarooLM has been closed")
        return self._engine

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.engine.n_vocab

    def info(self) -> dict[str, Any]:
        e = self.engine
        return {
            "model_path": str(self.model_path), "name": e.name, "arch": e.arch, "n_layer": e.n_layer,
            "n_embd": e.n_embd, "n_head": e.n_head, "n_head_kv": e.n_head_kv, "n_vocab": e.n_vocab,
            "n_ctx": e.n_ctx, "n_ctx_train": e.n_ctx_train, "weight_bytes": e.weight_bytes,
            "kv_bytes": e.kv_bytes, "backend": e.backend, "n_threads": e.n_threads,
            "fingerprint": e.fingerprint,
            "adapter_path": str(self.adapter_path) if self.adapter_path else None,
            "adapter": e.adapter_info,
        }

    def load_adapter(self, adapter_path: Union[str, os.PathLike]) -> None:
        """Loads a Kangaroo adapter GGUF made for this model (replacing any loaded one)."""
        path = Path(adapter_path)
        if not path.is_file():
            raise FileNotFoundError(f"adapter file not found: {path}")
        with self._idle("load an adapter"):
            self.engine.load_adapter(str(path))
            self.adapter_path = path

    @property
    def adapter_info(self) -> Optional[dict]:
        return self.engine.adapter_info

    def reset(self) -> None:
        """Forgets the cached conversation: the next prompt is evaluated from scratch.

        Reusing a cached prefix evaluates the rest of a prompt in a different batch shape than a
        fresh run would, and ggml's batched kernels round differently from its one-token ones, so
        near-ties can then break differently (as in llama.cpp)."""
        with self._idle("reset"):
            self.engine.truncate(0)

    def close(self) -> None:
        """Frees the model's memory; the object cannot be used afterwards."""
        with self._idle("close"):
            self._engine = None

    @contextlib.contextmanager
    def _idle(self, what: str) -> Iterator[None]:
        """Holds the generation lock for a state change, refusing it while a generation (an
        open stream, or another thread) uses the model: waiting could deadlock on a stream
        that the caller's own thread holds open."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"cannot {what}: this model is generating (an unfinished stream, or another "
                               "thread); finish or close that generation first")
        try:
            yield
        finally:
            self._lock.release()

    def __enter__(self) -> "KangarooLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- tokens --------------------------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama.cpp's tokenization. Special tokens written in the text (e.g. <|im_start|>) are
        parsed as such unless parse_special is False."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: no UTF-8 for the tokenizer
            raise ValueError(f"text is not valid Unicode: {e.reason} at position {e.start}") from None
        return self.engine.tokenize(text, add_special, parse_special)

    def detokenize(self, token_ids: Sequence[int], special: bool = False) -> str:
        ids = self._check_token_ids(token_ids, "token_ids")
        return self.engine.detokenize(ids, special).decode("utf-8", errors="replace")

    def _check_token_ids(self, token_ids: Sequence[int], name: str) -> list[int]:
        ids = list(token_ids)
        n_vocab = self.engine.n_vocab
        for t in ids:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < n_vocab:
                raise ValueError(f"{name}: {t!r} is not a token id in [0, {n_vocab})")
        return ids

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, (str, bytes)):
            ids = self.tokenize(prompt)
        else:
            ids = self._check_token_ids(prompt, "prompt")
        if not ids:
            raise ValueError("prompt is empty: it must contain at least one token")
        if len(ids) > self.n_ctx:
            raise ValueError(f"prompt has {len(ids)} tokens but the context holds n_ctx={self.n_ctx}; "
                             "shorten the prompt or load the model with a larger n_ctx")
        return ids

    # ---- chat ----------------------------------------------------------------------------

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        if self._chat_template is None:
            e = self.engine
            bos = e.token_to_piece(e.bos, True).decode("utf-8", "replace") if e.bos >= 0 else ""
            eos = e.token_to_piece(e.eos, True).decode("utf-8", "replace") if e.eos >= 0 else ""
            self._chat_template = chat_template_for(e.chat_template, self._chat_template_override, bos, eos,
                                                    str(self.model_path))
        return self._chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    # ---- generation ----------------------------------------------------------------------

    def generate(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, *,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 seed: Optional[int] = None, sampling: Optional[SamplingParams] = None,
                 stop: Optional[Union[str, Sequence[str]]] = None, stream: bool = False,
                 speculative: bool = True, tau: Optional[float] = None, gamma: Optional[int] = None,
                 lookup: Optional[bool] = None) -> Union[GenerationResult, Iterator[GenerationChunk]]:
        """Continues `prompt` (text, or token ids). With stream=True returns an iterator of
        GenerationChunk; otherwise a GenerationResult with text, token_ids, finish_reason, stats.

        max_tokens=None generates until an end-of-generation token or a full context.
        With an adapter loaded, speculative=True drafts with it: tau=None (default) lets the
        speculation controller draft only when it pays on this machine; a float is a fixed
        confidence threshold (the paper's rule). gamma caps the drafts per cycle. lookup also drafts
        by prompt lookup (what followed an earlier occurrence of the latest tokens): with tau=None
        where the controller expects it to pay, with a fixed tau whenever the latest two or more
        tokens occurred before. Default: on with the controller, off with a fixed tau.
        """
        if sampling is None:
            sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
        chunks = self.stream_generate(prompt, max_tokens, sampling=sampling, stop=stop,
                                      speculative=speculative, tau=tau, gamma=gamma, lookup=lookup)
        if stream:
            return chunks
        text, ids, last = [], [], None
        for chunk in chunks:
            text.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
        assert last is not None and last.finish_reason is not None
        return GenerationResult(text="".join(text), token_ids=ids, finish_reason=last.finish_reason,
                                stats=last.stats or {}, prompt_token_ids=(last.stats or {}).get("prompt_token_ids", []))

    def stream_generate(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, *,
                        sampling: SamplingParams = SamplingParams(),
                        stop: Optional[Union[str, Sequence[str]]] = None, speculative: bool = True,
                        tau: Optional[float] = None, gamma: Optional[int] = None,
                        lookup: Optional[bool] = None) -> Iterator[GenerationChunk]:
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive integer or None, got {max_tokens!r}")
        if tau is not None and (not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 <= tau <= 1.0):
            raise ValueError(f"tau must be a number in [0, 1], got {tau!r}")
        if gamma is not None and (not isinstance(gamma, int) or isinstance(gamma, bool) or not 1 <= gamma <= 64):
            raise ValueError(f"gamma must be an integer in [1, 64], got {gamma!r}")
        stops = _stop_list(stop)
        prompt_ids = self._prompt_ids(prompt)
        draft = None
        if speculative and self.engine.has_adapter:
            info = self.engine.adapter_info
            # tau None: the speculation controller decides when to draft and how far (gamma caps it)
            draft = _Draft(None if tau is None else float(tau), info["gamma"] if gamma is None else gamma,
                           tau is None if lookup is None else bool(lookup))
        return self._stream(prompt_ids, max_tokens, sampling, stops, speculative, draft)

    def _stream(self, prompt_ids: list[int], max_tokens: Optional[int], sampling: SamplingParams,
                stops: list[str], speculative: bool, draft: Optional["_Draft"]) -> Iterator[GenerationChunk]:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this model is already generating (an unfinished stream, or another thread); "
                               "finish or close that generation first")
        try:
            engine = self.engine
            stats: dict[str, Any] = {"speculative": draft is not None}
            if speculative and draft is None:
                stats["speculative_fallback"] = "no Kangaroo adapter is loaded: plain decoding"
            # no generation outgrows the context: the clamp keeps the count a C int for the engine
            limit = self.n_ctx if max_tokens is None else min(max_tokens, self.n_ctx)
            text = _TextAssembler(engine, stops)
            t0 = time.perf_counter()
            if draft is None:
                steps = _plain_steps(engine, prompt_ids, sampling)
            else:
                steps = _kangaroo_steps(engine, prompt_ids, sampling, draft, limit)
            generated: list[int] = []
            finish = "length"
            t_first = None
            for step in steps:
                if t_first is None:
                    t_first = time.perf_counter()
                new_ids, new_text, hit = [], [], False
                for tok in step:
                    if engine.is_eog(tok):
                        hit = True
                        break
                    generated.append(tok)
                    new_ids.append(tok)
                    piece, hit = text.add(tok)
                    new_text.append(piece)
                    if hit or len(generated) >= limit:
                        break
                if hit:
                    finish = "stop"
                done = hit or len(generated) >= limit or engine.n_past >= self.n_ctx
                if done:
                    new_text.append(text.flush())
                    t_end = time.perf_counter()
                    stats.update(_timing_stats(prompt_ids, generated, t0, t_first, t_end))
                    if draft is not None:
                        stats.update(_kangaroo_stats(engine, draft))
                    yield GenerationChunk("".join(new_text), new_ids, finish, stats)
                    return
                yield GenerationChunk("".join(new_text), new_ids)
        finally:
            self._lock.release()

    # ---- OpenAI-shaped completions -------------------------------------------------------

    def create_completion(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS,
                          stream: bool = False, **kwargs: Any) -> Union[dict, Iterator[dict]]:
        """llama-cpp-python's create_completion: a `text_completion` dict, or chunks when streaming."""
        cid, created, model = f"cmpl-{uuid.uuid4()}", int(time.time()), str(self.model_path)
        chunks = self.generate(prompt, max_tokens, stream=True, **kwargs)

        def shape(text: str, finish: Optional[str], stats: Optional[dict]) -> dict:
            out = {"id": cid, "object": "text_completion", "created": created, "model": model,
                   "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
            if stats is not None:
                out["usage"] = _usage(stats)
                out["stats"] = stats
            return out

        if stream:
            return (shape(c.text, c.finish_reason, c.stats) for c in chunks)
        parts, last = [], None
        for c in chunks:
            parts.append(c.text)
            last = c
        return shape("".join(parts), last.finish_reason, last.stats)

    def create_chat_completion(self, messages: Sequence[dict[str, Any]],
                               max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, stream: bool = False,
                               **kwargs: Any) -> Union[dict, Iterator[dict]]:
        """llama-cpp-python's create_chat_completion: the GGUF's chat template, OpenAI shapes."""
        prompt = self.apply_chat_template(messages, add_generation_prompt=True)
        cid, created, model = f"chatcmpl-{uuid.uuid4()}", int(time.time()), str(self.model_path)
        chunks = self.generate(prompt, max_tokens, stream=True, **kwargs)
        if stream:
            return _chat_chunks(chunks, cid, created, model)
        parts, last = [], None
        for c in chunks:
            parts.append(c.text)
            last = c
        return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                             "logprobs": None, "finish_reason": last.finish_reason}],
                "usage": _usage(last.stats), "stats": last.stats}


# ---- decoding steps ----------------------------------------------------------------------

def _plain_steps(engine: "_native.Engine", prompt_ids: list[int], sampling: SamplingParams) -> Iterator[list[int]]:
    """Plain decoding: one token per step. A token is evaluated only when the next is asked
    for, so stopping never costs a wasted forward pass."""
    engine.seed(sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(8), "little"))
    engine.set_prompt(prompt_ids)
    while True:
        tok = engine.sample(sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p)
        yield [tok]
        if engine.n_past >= engine.n_ctx:
            return
        engine.append(tok)


def _kangaroo_steps(engine: "_native.Engine", prompt_ids: list[int], sampling: SamplingParams,
                    draft: "_Draft", limit: int) -> Iterator[list[int]]:
    """Kangaroo decoding: the first token comes from the prompt's forward pass, then each
    cycle (draft, verify, accept, roll back: KangarooDecoder::step) adds one or more tokens."""
    engine.seed(sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(8), "little"))
    yield [engine.kangaroo_start(prompt_ids, sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p)]
    produced = 1
    while produced < limit and engine.n_past < engine.n_ctx:
        out = engine.kangaroo_step(draft.tau, draft.gamma, limit - produced, draft.lookup)
        produced += len(out)
        yield out


class _Draft(NamedTuple):
    """How a generation drafts: tau None lets the speculation controller decide; gamma caps the
    drafts per cycle; lookup also drafts by prompt lookup."""
    tau: Optional[float]
    gamma: int
    lookup: bool


class _TextAssembler:
    """Token bytes -> text, cut at the first stop string; text that might be the start of a
    stop string is held back until it is known not to be one."""

    def __init__(self, engine: "_native.Engine", stops: list[str]):
        self._engine = engine
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._held = ""  # decoded, not yet emitted

    def add(self, token: int) -> tuple[str, bool]:
        self._held += self._decoder.decode(self._engine.token_to_piece(token, False))
        for s in self._stops:
            i = self._held.find(s)
            if i >= 0:
                out, self._held = self._held[:i], ""
                return out, True
        keep = max((_overlap(self._held, s) for s in self._stops), default=0)
        out = self._held[:len(self._held) - keep]
        self._held = self._held[len(out):]
        return out, False

    def flush(self) -> str:
        out = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _stop_list(stop: Optional[Union[str, Sequence[str]]]) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
    return stops


def _timing_stats(prompt_ids: list[int], generated: list[int], t0: float, t_first: float, t_end: float) -> dict:
    prompt_s = t_first - t0
    gen_s = max(t_end - t_first, 1e-9)
    return {
        "n_prompt_tokens": len(prompt_ids), "n_tokens": len(generated),
        "prompt_seconds": prompt_s, "generation_seconds": gen_s,
        "prompt_tokens_per_second": len(prompt_ids) / max(prompt_s, 1e-9),
        # tokens after the first: the first token comes out of the prompt's forward pass
        "tokens_per_second": max(len(generated) - 1, 0) / gen_s,
        "prompt_token_ids": list(prompt_ids),
    }


def _kangaroo_stats(engine: "_native.Engine", draft: "_Draft") -> dict:
    s = engine.kangaroo_stats()
    cycles = max(s["cycles"], 1)
    return {
        "tau": "auto" if draft.tau is None else draft.tau, "gamma": draft.gamma,
        # tokens the controller decoded without drafting (auto mode), and its speculative tries
        # while speculation was switched off
        "plain_steps": s["plain_steps"], "probes": s["probes"],
        "cycles": s["cycles"], "drafted": s["drafted"],
        "accepted": s["accepted"],
        # tokens each verification adds: the accepted drafts plus the model's own token
        "mean_accepted": s["cycle_tokens"] / cycles,
        "acceptance_rate": s["accepted"] / max(s["drafted"], 1),
        "accepted_hist": s["accepted_hist"], "draft_seconds": s["draft_seconds"],
        "verify_seconds": s["verify_seconds"],
        # cycles (counted above too) whose drafts came from prompt lookup rather than the adapter
        "lookup": draft.lookup, "lookup_cycles": s["lookup_cycles"],
        "lookup_drafted": s["lookup_drafted"], "lookup_accepted": s["lookup_accepted"],
    }


def _usage(stats: dict) -> dict:
    return {"prompt_tokens": stats["n_prompt_tokens"], "completion_tokens": stats["n_tokens"],
            "total_tokens": stats["n_prompt_tokens"] + stats["n_tokens"]}


def _chat_chunks(chunks: Iterator[GenerationChunk], cid: str, created: int, model: str) -> Iterator[dict]:
    def shape(delta: dict, finish: Optional[str]) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield shape({"role": "assistant"}, None)
    for c in chunks:
        if c.text:
            yield shape({"content": c.text}, None)
        if c.finish_reason is not None:
            final = shape({}, c.finish_reason)
            final["usage"] = _usage(c.stats)
            final["stats"] = c.stats
            yield final

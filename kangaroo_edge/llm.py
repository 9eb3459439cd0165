"""KangarooLM: load a GGUF model once, then generate, stream, or chat with it.

Layering: the native engine (kangaroo_edge._native) does the compute and the decode loop's steps
(decoding.py); this class owns the loaded model, turns steps into text (text.py) and shapes
results like llama-cpp-python's (openai_shapes.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from . import _native, openai_shapes
from .chat_template import BuiltinChatTemplate, ChatTemplate, chat_template_for
from .constraints import Grammar, GrammarMask, as_grammar, grammar_from_response_format, grammar_tokenizer
from .decoding import DEFAULT_GAMMA, DraftOptions, decode_steps
from .models import resolve_model, shipped_adapter_path
from .prompt_cache import PromptCache
from .text import TextAssembler, stop_list
from .tools import active_tools, call_grammar, template_messages, template_reads_tools
from .types import DEFAULT_REPEAT_LAST_N, GenerationChunk, GenerationResult, ModelHparams, SamplingParams

NO_ADAPTER_FALLBACK = "no Kangaroo adapter is loaded: plain decoding"
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
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not 1 <= n_ctx <= _native.MAX_N_CTX:
            raise ValueError(f"n_ctx must be an integer in [1, {_native.MAX_N_CTX}], got {n_ctx!r}")
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
        self._grammar_tokenizer: Any = None  # llguidance's view of the vocabulary, built on first use
        self._prompt_cache: Optional[PromptCache] = None
        self._from_scratch = False  # reset() asked the next prompt to reuse nothing

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

    @property
    def hparams(self) -> ModelHparams:
        e = self.engine
        return ModelHparams(arch=e.arch, n_layer=e.n_layer, n_embd=e.n_embd, n_head=e.n_head, n_head_kv=e.n_head_kv,
                            head_dim=e.head_dim, n_vocab=e.n_vocab, n_ctx_train=e.n_ctx_train, rms_eps=e.rms_eps,
                            rope_freq_base=e.rope_freq_base, fingerprint=e.fingerprint, bos=e.bos, eos=e.eos)

    def forward(self, inputs: Any, layer_begin: int, layer_end: int, pos0: int = 0, output: str = "logits",
                all_outputs: bool = True) -> Any:
        """Layers [layer_begin, layer_end) over token ids (layer_begin 0) or hidden states
        [n, n_embd] at positions pos0..: hidden states, final-normed states ("normed") or logits,
        as a float32 array [n or 1, n_embd or n_vocab]. For training features and checks: it
        forgets the cached conversation."""
        with self._idle("run a forward pass"):
            return self.engine.forward(inputs, layer_begin, layer_end, pos0, output, all_outputs)

    @property
    def n_tokens(self) -> int:
        """Tokens in the cached conversation (what the next prompt may reuse)."""
        return self.engine.n_past

    def cost_model(self) -> dict[str, Any]:
        """What the speculation controller has measured on this machine: the plain step, and per
        drafter its draft step, the cost of verifying a cycle of k drafts (measured or
        extrapolated) and how often its drafts were right."""
        return self.engine.cost_model()

    def set_cache(self, cache: Optional[PromptCache]) -> None:
        """Keeps several conversations' states in RAM (prompt_cache.py; llama-cpp-python's
        set_cache): a prompt that continues a saved one evaluates only its new tokens. None: off."""
        with self._idle("set the prompt cache"):
            self._prompt_cache = cache

    def save_state(self) -> _native.SequenceState:
        """The cached conversation (its KV caches, the adapter's too), to load_state() later."""
        with self._idle("save the state"):
            return self.engine.save_state()

    def load_state(self, state: _native.SequenceState) -> None:
        """Makes a saved conversation the cached one (a state of this model only)."""
        with self._idle("load a state"):
            self.engine.load_state(state)

    def reset(self) -> None:
        """Forgets the cached conversation: the next prompt is evaluated from scratch (a prompt
        cache keeps the conversation, for the prompts after that one)."""
        with self._idle("reset"):
            if self._prompt_cache is not None and self.engine.n_past:
                self._prompt_cache.store(self.engine.save_state())
            self.engine.truncate(0)
            self._from_scratch = True

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

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: Optional[Sequence[dict]] = None) -> str:
        """The messages in the model's chat format. tools (OpenAI's function tools) and the
        messages' tool calls and results go through the template's own tools section when it
        has one, else through the generic format of tools.py."""
        template = self._template()
        native = isinstance(template, ChatTemplate) and template_reads_tools(template.source)
        if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            messages = template_messages(messages, tools or [], native)
            if native and tools:
                return template.render(messages, add_generation_prompt=add_generation_prompt, tools=list(tools))
        return template.render(messages, add_generation_prompt=add_generation_prompt)

    def _template(self) -> Union[ChatTemplate, BuiltinChatTemplate]:
        if self._chat_template is None:
            e = self.engine
            bos = e.token_to_piece(e.bos, True).decode("utf-8", "replace") if e.bos >= 0 else ""
            eos = e.token_to_piece(e.eos, True).decode("utf-8", "replace") if e.eos >= 0 else ""
            self._chat_template = chat_template_for(e.chat_template, self._chat_template_override, bos, eos,
                                                    str(self.model_path))
        return self._chat_template

    # ---- generation ----------------------------------------------------------------------

    def generate(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, *,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 seed: Optional[int] = None, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, repeat_last_n: int = DEFAULT_REPEAT_LAST_N,
                 sampling: Optional[SamplingParams] = None,
                 stop: Optional[Union[str, Sequence[str]]] = None, stream: bool = False,
                 speculative: bool = True, tau: Optional[float] = None, gamma: Optional[int] = None,
                 lookup: Optional[bool] = None, grammar: Union[Grammar, str, None] = None,
                 response_format: Optional[dict] = None) -> Union[GenerationResult, Iterator[GenerationChunk]]:
        """Continues `prompt` (text, or token ids). With stream=True returns an iterator of
        GenerationChunk; otherwise a GenerationResult with text, token_ids, finish_reason, stats.

        max_tokens=None generates until an end-of-generation token or a full context.
        With an adapter loaded, speculative=True drafts with it: tau=None (default) lets the
        speculation controller draft only when it pays on this machine; a float is a fixed
        confidence threshold (the paper's rule). gamma caps the drafts per cycle. lookup also drafts
        by prompt lookup (what followed an earlier occurrence of the latest tokens): with tau=None
        where the controller expects it to pay, with a fixed tau whenever the latest two or more
        tokens occurred before. Default: on with the controller, off with a fixed tau.

        grammar (a constraints.Grammar, or GBNF / Lark text) or response_format (OpenAI's:
        {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}})
        constrains every token to the grammar, speculative or not (docs/kangaroo.md, "Constrained decoding").

        repeat_penalty, frequency_penalty, presence_penalty and repeat_last_n are llama.cpp's
        repetition penalties over this generation's output (types.SamplingParams); speculative
        decoding keeps them exact. `sampling` replaces all the sampling keywords.
        """
        if sampling is None:
            sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                                      repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                      presence_penalty=presence_penalty, repeat_last_n=repeat_last_n)
        prompt_ids = self._prompt_ids(prompt)
        chunks = self.stream_generate(prompt_ids, max_tokens, sampling=sampling, stop=stop,
                                      speculative=speculative, tau=tau, gamma=gamma, lookup=lookup,
                                      grammar=grammar, response_format=response_format)
        if stream:
            return chunks
        text, ids, last = [], [], None
        for chunk in chunks:
            text.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
        assert last is not None and last.finish_reason is not None
        return GenerationResult(text="".join(text), token_ids=ids, finish_reason=last.finish_reason,
                                stats=last.stats, draft=last.draft, prompt_token_ids=prompt_ids)

    def stream_generate(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, *,
                        sampling: SamplingParams = SamplingParams(),
                        stop: Optional[Union[str, Sequence[str]]] = None, speculative: bool = True,
                        tau: Optional[float] = None, gamma: Optional[int] = None,
                        lookup: Optional[bool] = None, grammar: Union[Grammar, str, None] = None,
                        response_format: Optional[dict] = None) -> Iterator[GenerationChunk]:
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive integer or None, got {max_tokens!r}")
        draft = self.draft_options(speculative, tau, gamma, lookup)
        stops = stop_list(stop)
        prompt_ids = self._prompt_ids(prompt)
        if grammar is not None and response_format is not None:
            raise ValueError("pass grammar or response_format, not both")
        constraint = as_grammar(grammar) or grammar_from_response_format(response_format)
        return self._stream(prompt_ids, max_tokens, sampling, stops, draft, constraint)

    def draft_options(self, speculative: bool = True, tau: Optional[float] = None, gamma: Optional[int] = None,
                      lookup: Optional[bool] = None) -> DraftOptions:
        """How a generation with these arguments drafts (generate() documents them): gamma
        defaults to the adapter's, lookup to on with the controller; no adapter: plain decoding."""
        adapter = self.engine.adapter_info
        return DraftOptions(speculative and adapter is not None, tau,
                            (adapter["gamma"] if adapter else DEFAULT_GAMMA) if gamma is None else gamma,
                            tau is None if lookup is None else bool(lookup),
                            NO_ADAPTER_FALLBACK if speculative and adapter is None else None)

    def grammar_mask(self, grammar: Grammar) -> GrammarMask:
        """A fresh constraint for one generation (the vocabulary's grammar view is built once)."""
        if self._grammar_tokenizer is None:
            self._grammar_tokenizer = grammar_tokenizer(self.engine)
        return GrammarMask(self._grammar_tokenizer, grammar)

    def _stream(self, prompt_ids: list[int], max_tokens: Optional[int], sampling: SamplingParams,
                stops: list[str], draft: DraftOptions,
                constraint: Optional[Grammar] = None) -> Iterator[GenerationChunk]:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this model is already generating (an unfinished stream, or another thread); "
                               "finish or close that generation first")
        try:
            engine = self.engine
            text = TextAssembler(lambda t: engine.token_to_piece(t, False), stops)
            n_output = 0
            mask = self.grammar_mask(constraint) if constraint is not None else None
            if self._prompt_cache is not None and not self._from_scratch:
                self._prompt_cache.prepare(engine, prompt_ids)
            self._from_scratch = False
            # the decoder ends the generation (engine.finish_reason) but for stop strings: text,
            # which it does not see, so they are found here and reported to it (engine.stop)
            for step in decode_steps(engine, prompt_ids, sampling, draft, max_tokens or 0, mask):
                pieces = []
                for i, tok in enumerate(step):
                    piece, hit = text.add(tok)
                    pieces.append(piece)
                    if hit:
                        step = step[:i + 1]
                        engine.stop(n_output + len(step))
                        break
                n_output += len(step)
                if engine.finish_reason is None:
                    yield GenerationChunk("".join(pieces), step)
                    continue
                pieces.append(text.flush())
                yield GenerationChunk("".join(pieces), step, engine.finish_reason, engine.stats(), draft)
                return
        finally:
            self._lock.release()

    # ---- OpenAI-shaped completions -------------------------------------------------------

    def create_completion(self, prompt: Prompt, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS,
                          stream: bool = False, stream_options: Optional[dict] = None,
                          **kwargs: Any) -> Union[dict, Iterator[dict]]:
        """llama-cpp-python's create_completion: a `text_completion` dict, or chunks when streaming
        (stream_options {"include_usage": True}: a last chunk with the usage, as OpenAI's)."""
        shaper = self._shaper(False, (), stream_options)
        chunks = self.generate(prompt, max_tokens, stream=True, **kwargs)
        return shaper.stream(chunks) if stream else shaper.collect(chunks)

    def create_chat_completion(self, messages: Sequence[dict[str, Any]],
                               max_tokens: Optional[int] = DEFAULT_MAX_TOKENS, stream: bool = False,
                               tools: Optional[Sequence[dict]] = None, tool_choice: Any = None,
                               stream_options: Optional[dict] = None, **kwargs: Any) -> Union[dict, Iterator[dict]]:
        """llama-cpp-python's create_chat_completion: the GGUF's chat template, OpenAI shapes.
        tools / tool_choice ("auto", "none", "required" or {"type": "function", "function":
        {"name": ...}}) as OpenAI's: calls come back as message.tool_calls (finish_reason
        "tool_calls"); "required" and a named function constrain the output to one valid call."""
        shown = active_tools(tools, tool_choice)
        prompt = self.apply_chat_template(messages, add_generation_prompt=True, tools=shown)
        forced = call_grammar(shown, tool_choice or "auto")
        if forced is not None:
            kwargs["grammar"] = forced
        shaper = self._shaper(True, shown, stream_options)
        chunks = self.generate(prompt, max_tokens, stream=True, **kwargs)
        return shaper.stream(chunks) if stream else shaper.collect(chunks)

    def _shaper(self, chat: bool, tools: Sequence[dict], stream_options: Optional[dict]) -> openai_shapes.Shaper:
        include_usage = bool((stream_options or {}).get("include_usage", False))
        return openai_shapes.Shaper(chat, str(self.model_path), int(time.time()), tools, include_usage)

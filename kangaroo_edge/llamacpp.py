"""llama.cpp through llama-cpp-python, in one module: the oracle the tests check our engine
against, the baseline the benchmark times, and llama.cpp's built-in chat formats. Every call that
goes below llama-cpp-python's `Llama` class (its C functions through ctypes, its private handles)
is made here, so a llama-cpp-python upgrade is checked in one place."""

from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np


class LlamaCpp:
    """One llama.cpp model and context on the CPU, stepped by hand: evaluate tokens, read the
    logits, greedy continuations. `llm` is the llama-cpp-python `Llama` for everything else."""

    def __init__(self, model_path: Union[str, Path], n_ctx: int, n_threads: int, logits_all: bool = False,
                 draft_model: Any = None, **kwargs: Any):
        import llama_cpp

        self._lib = llama_cpp
        # ggml would put quantized weights in its AMX buffers, whose tiles raise SIGILL on the
        # first prompt (llama.cpp PR 26954) and take the whole process down. Without extra buffer
        # types llama.cpp also loses its repacked weights (CPU_REPACK): a slower baseline that
        # works; README "CPUs with AMX" gives the build that keeps them.
        with _model_params(use_extra_bufts="AMX" not in cpu_extra_buffer_types()):
            self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads,
                                       n_threads_batch=n_threads, n_gpu_layers=0, logits_all=logits_all,
                                       draft_model=draft_model, verbose=False, **kwargs)
        self.n_vocab = self.llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)

    def is_eog(self, token: int) -> bool:
        """An end-of-generation token (EOS, EOT, ...), as llama.cpp's samplers stop on."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def last_logits(self) -> np.ndarray:
        """[n_vocab] logits of the last evaluated token: a view of llama.cpp's buffer, valid until
        the next evaluation (no copy: the benchmark reads it once per timed step)."""
        ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def greedy(self, prompt_ids: list[int], n_new: int, stop_at_eog: bool = True) -> list[int]:
        """Greedy continuation, one llama_decode per token, argmax as llama.cpp's greedy sampler."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        out: list[int] = []
        for _ in range(n_new):
            tok = int(np.argmax(self.last_logits()))
            if stop_at_eog and self.is_eog(tok):
                break
            out.append(tok)
            self.llm.eval([tok])
        return out

    def sample(self, prompt_ids: list[int], n_new: int, **sampling: Any) -> list[int]:
        """A continuation by llama-cpp-python's own sampler chain (`Llama.generate`: its
        penalties over the tokens it samples, then greedy at temp 0 or its filters), up to an
        end-of-generation token. From a fresh state: a reused prefix would be evaluated in other
        batches, whose rounding may differ."""
        self.llm.reset()
        out: list[int] = []
        for tok in self.llm.generate(prompt_ids, **sampling):
            if self.is_eog(tok) or len(out) == n_new:
                break
            out.append(tok)
        return out

    def all_logits(self, prompt_ids: list[int]) -> np.ndarray:
        """[n_tokens, n_vocab] logits at every position (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        return np.array(self.llm.scores[: len(prompt_ids)])


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """Sets llama_model_params fields that `Llama` has no argument for, in the models it loads
    inside the block: llama-cpp-python takes its params from llama_model_default_params."""
    import llama_cpp.llama_cpp as c_api

    default = c_api.llama_model_default_params

    def with_fields():
        params = default()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    c_api.llama_model_default_params = with_fields
    try:
        yield
    finally:
        c_api.llama_model_default_params = default


@functools.cache
def cpu_extra_buffer_types() -> tuple[str, ...]:
    """The names of the extra buffer types llama.cpp's CPU device offers for weights on this
    machine, in its order of preference: "CPU_REPACK" (weights repacked for faster kernels), and
    "AMX" where ggml was built with AMX and the CPU has it."""
    from llama_cpp._ggml import libggml

    vp = ctypes.c_void_p
    for name, restype, argtypes in [("ggml_backend_dev_by_type", vp, [ctypes.c_int]),
                                    ("ggml_backend_dev_backend_reg", vp, [vp]),
                                    ("ggml_backend_reg_get_proc_address", vp, [vp, ctypes.c_char_p]),
                                    ("ggml_backend_buft_name", ctypes.c_char_p, [vp])]:
        getattr(libggml, name).restype = restype
        getattr(libggml, name).argtypes = argtypes
    cpu = libggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not cpu:
        return ()
    address = libggml.ggml_backend_reg_get_proc_address(libggml.ggml_backend_dev_backend_reg(cpu),
                                                        b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return ()
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(vp), vp)(address)(cpu)  # a NULL-terminated array
    names = []
    while bufts and bufts[len(names)]:
        names.append(libggml.ggml_backend_buft_name(bufts[len(names)]).decode())
    return tuple(names)


def builtin_chat_templates() -> list[str]:
    """llama.cpp's built-in chat formats, by the names llama_chat_apply_template accepts."""
    import llama_cpp

    n = llama_cpp.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * n)()
    llama_cpp.llama_chat_builtin_templates(names, n)
    return [name.decode() for name in names]


def apply_builtin_chat_template(name: str, messages: Sequence[tuple[str, str]], add_generation_prompt: bool) -> str:
    """(role, content) messages rendered by llama.cpp in its built-in format `name`."""
    import llama_cpp

    # the C strings must outlive the call: keep the encoded bytes referenced here
    encoded = [(role.encode(), content.encode()) for role, content in messages]
    chat = (llama_cpp.llama_chat_message * len(encoded))(*(llama_cpp.llama_chat_message(r, c) for r, c in encoded))
    size = 2 * sum(len(r) + len(c) for r, c in encoded) + 256
    for _ in range(2):  # the call returns the length it needs when the buffer is too small
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(encoded), add_generation_prompt, buf, size)
        if n < 0:
            raise ValueError(f"llama.cpp cannot render chat template {name!r}")
        if n <= size:
            return buf.raw[:n].decode("utf-8", "replace")
        size = n
    raise RuntimeError("llama_chat_apply_template kept asking for a larger buffer")


def quantize(src: Union[str, Path], dst: Union[str, Path], ftype: str, n_threads: int) -> None:
    """Writes dst: src quantized by llama.cpp's quantizer to `ftype` (a LLAMA_FTYPE_* name), also
    from an already quantized src."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.allow_requantize = True
    params.nthread = n_threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to {ftype}")

"""Many sequences at once: llama.cpp's batch API (through llama-cpp-python's low-level bindings)
with one KV-cache stream per sequence, for the data stages (training answers, built-in prompts).

One decode step runs one row per active sequence through one graph, so each weight block is read
once for all rows; on a memory-bound CPU step that is nearly free throughput. The context is made
with `kv_unified = False` and `n_seq_max = n_seq`: each sequence gets its own cache stream of
`n_ctx_seq` cells, and its rows attend only over its own cells. With one unified cache (llama.cpp's
default) every row's attention spans the cells of *all* sequences in the batch (masked, but
computed), so attention work grows with n_seq squared and a 16-sequence batch gained nothing
(benchmarks/batched_generation.py measures both).

Continuous batching: a slot whose sequence ends takes the next job at once. Prompts are prefilled
one sequence per llama_decode call (in chunks of n_batch); decode steps batch one token of every
decoding slot. Greedy picks the arg-max; sampling (temperature, top-p) draws from a per-job
generator seeded by `GenJob.seed`, so a job's output does not depend on which jobs run beside it,
as far as llama.cpp's kernels give each row the same logits in any batch (docs/training.md: measured).
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

DEFAULT_N_SEQ = 16
DEFAULT_N_CTX_SEQ = 2048
DEFAULT_N_BATCH = 512


@dataclass(frozen=True)
class GenJob:
    key: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float = 0.0      # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    stop: Optional[str] = None    # stop string (checked on the generated text)


@dataclass
class GenResult:
    key: str
    token_ids: list[int]          # generated tokens, end-of-generation token excluded
    text: str                     # their text, cut before `stop`
    finish_reason: str            # "stop" (end-of-generation token or stop string) | "length"
    seconds: float                # from the job's start to its end (shared with the batch)


@dataclass
class _Slot:
    job: GenJob
    rng: Optional[np.random.Generator]
    t0: float
    n_past: int = 0
    tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: Optional[np.random.Generator]) -> int:
    """logits: [n_vocab]. Greedy when temperature <= 0; else softmax(logits / T) cut to the smallest
    set of most likely tokens whose probability reaches top_p, renormalized."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)
        order = order[:keep]
    q = p[order] / p[order].sum()
    return int(order[rng.choice(len(order), p=q)])


class BatchedGenerator:
    """Owns one llama.cpp model and context (freed in `close`, children first)."""

    def __init__(self, model_path: str | Path, n_seq: int = DEFAULT_N_SEQ, n_ctx_seq: int = DEFAULT_N_CTX_SEQ,
                 n_threads: int = 1, kv_unified: bool = False, n_batch: int = DEFAULT_N_BATCH,
                 flash_attn: bool = False):
        import llama_cpp as lc

        if n_seq < 1 or n_ctx_seq < 2:
            raise ValueError(f"n_seq must be >= 1 and n_ctx_seq >= 2, got {n_seq}, {n_ctx_seq}")
        self._lc = lc
        self.n_seq, self.n_ctx_seq, self.n_batch = n_seq, n_ctx_seq, n_batch
        lc.llama_backend_init()
        _quiet_llama_log(lc)
        mparams = lc.llama_model_default_params()
        self._model = lc.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load the model {model_path}")
        cparams = lc.llama_context_default_params()
        cparams.n_seq_max = n_seq
        cparams.kv_unified = kv_unified
        # unified: one cache shared by all sequences; per-sequence streams: n_ctx is split n_seq ways
        cparams.n_ctx = n_seq * n_ctx_seq
        cparams.n_batch = cparams.n_ubatch = max(n_batch, n_seq)
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        # off, as in llama-cpp-python's Llama() and our engine, so greedy answers match theirs
        # (the context default, "auto", turns it on for the CPU and rounds attention differently)
        cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise ValueError(f"llama.cpp could not make a context of {n_seq} x {n_ctx_seq} tokens for {model_path}")
        self._mem = lc.llama_get_memory(self._ctx)
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self._batch = lc.llama_batch_init(cparams.n_batch, 0, 1)
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        lc = self._lc
        if getattr(self, "_ctx", None):
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            lc.llama_model_free(self._model)
            self._ctx = self._model = None

    def __enter__(self) -> BatchedGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- one llama_decode call

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """rows: (token, position, seq_id, wants_logits), at most n_batch."""
        b = self._batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(rows)
        rc = self._lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} on a batch of {len(rows)} tokens")

    def _logits(self, i: int) -> np.ndarray:
        """Logits [n_vocab] of batch row i of the last decode (a view, valid until the next call)."""
        ptr = self._lc.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(256)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:max(n, 0)]
        return piece

    def clear(self, seq: int) -> None:
        """Empties KV stream `seq`."""
        self._lc.llama_memory_seq_rm(self._mem, seq, -1, -1)

    # ---- the generation loop

    def _prefill(self, seq: int, slot: _Slot) -> int:
        """Runs the whole prompt of `slot` into stream `seq`; returns its first generated token."""
        ids = slot.job.prompt_ids
        self.clear(seq)
        for s in range(0, len(ids), self.n_batch):
            chunk = ids[s:s + self.n_batch]
            last = s + len(chunk) == len(ids)
            self._decode([(t, s + i, seq, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
        slot.n_past = len(ids)
        self._last_row = len(chunk) - 1  # the prompt's last token: the last row of the last chunk
        return sample_token(self._logits(self._last_row), slot.job.temperature, slot.job.top_p, slot.rng)

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """Teacher-forced: the logits [n_vocab] after `ids`, run alone in stream 0 (a copy)."""
        slot = _Slot(GenJob("next_logits", tuple(ids), 1), None, time.perf_counter())
        self._prefill(0, slot)
        return self._logits(self._last_row).copy()

    def _accept(self, slot: _Slot, token: int) -> Optional[str]:
        """Adds a generated token to a slot; returns a finish reason when the sequence is done."""
        job = slot.job
        if self._lc.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        slot.tokens.append(token)
        slot.text += self._piece(token)
        if job.stop and job.stop.encode() in slot.text:
            return "stop"
        if len(slot.tokens) >= job.max_new_tokens or slot.n_past + 1 >= self.n_ctx_seq:
            return "length"
        return None

    def _result(self, slot: _Slot, finish: str) -> GenResult:
        text = bytes(slot.text)
        if slot.job.stop:
            cut = text.find(slot.job.stop.encode())
            text = text if cut < 0 else text[:cut]
        return GenResult(slot.job.key, slot.tokens, text.decode("utf-8", errors="replace"), finish,
                         time.perf_counter() - slot.t0)

    def generate(self, jobs: Iterable[GenJob]) -> Iterator[GenResult]:
        """Yields one GenResult per job, in the order the jobs finish."""
        queue = deque(jobs)
        for job in queue:
            if not 1 <= len(job.prompt_ids) < self.n_ctx_seq:
                raise ValueError(f"job {job.key}: a prompt of {len(job.prompt_ids)} tokens does not fit "
                                 f"the {self.n_ctx_seq}-token context of a sequence")
        slots: dict[int, _Slot] = {}
        pending: dict[int, int] = {}   # seq -> token to feed at the next step
        while queue or slots:
            for seq in range(self.n_seq):  # fill free slots
                while seq not in slots and queue:
                    job = queue.popleft()
                    rng = np.random.default_rng(job.seed) if job.temperature > 0 else None
                    slot = _Slot(job, rng, time.perf_counter())
                    token = self._prefill(seq, slot)
                    finish = self._accept(slot, token)
                    if finish:
                        yield self._result(slot, finish)
                    else:
                        slots[seq], pending[seq] = slot, token
            if not slots:
                break
            order = sorted(slots)
            self._decode([(pending[s], slots[s].n_past, s, True) for s in order])
            for i, s in enumerate(order):
                slot = slots[s]
                slot.n_past += 1
                token = sample_token(self._logits(i), slot.job.temperature, slot.job.top_p, slot.rng)
                finish = self._accept(slot, token)
                if finish:
                    del slots[s], pending[s]
                    yield self._result(slot, finish)
                else:
                    pending[s] = token


def _quiet_llama_log(lc) -> None:
    """llama.cpp logs every model load to stderr; keep errors only."""
    @lc.llama_log_callback
    def log(level, text, user_data):
        if level == 4:  # GGML_LOG_LEVEL_ERROR
            import sys

            sys.stderr.write(text.decode("utf-8", errors="replace"))
    _quiet_llama_log.callback = log  # keep the ctypes callback alive
    lc.llama_log_set(log, ctypes.c_void_p(0))

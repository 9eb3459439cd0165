"""Many sequences at once on our engine: the data stages' generator (training answers, built-in
prompts), and the path parallel requests can take.

The engine's BatchDecoder (native/batch_decoder.h) runs one row per active sequence through one
weight pass, each sequence in a KV block of its own, and gives every row the bits it would get
alone: a sequence's tokens do not depend on what runs beside it, sampled ones included (each
job's sampler is seeded by its `SamplingParams.seed`, as `KangarooLM.generate(seed=...)` seeds its
own; the repetition penalties count each sequence's own output).

Continuous batching: a slot whose sequence ends takes the next job at once. The engine decides
when a sequence ends (an end-of-generation token, its token budget, a full block); this module
adds stop strings, which need the text.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

from .decoding import generation_seed
from .types import SamplingParams

if TYPE_CHECKING:
    from .llm import KangarooLM

DEFAULT_N_SEQ = 16  # the most the kernels multiply in one pass (_native.MAX_BATCH_SEQUENCES)
DEFAULT_N_CTX_SEQ = 2048


@dataclass(frozen=True)
class GenJob:
    key: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = SamplingParams()  # greedy by default; seed None: a random one
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
    t0: float
    tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)


class BatchedGenerator:
    """Decodes jobs `n_seq` at a time with the engine of `lm` (its weights and threads; while a
    batch runs, `lm` itself cannot generate)."""

    def __init__(self, lm: KangarooLM, n_seq: int = DEFAULT_N_SEQ, n_ctx_seq: int = DEFAULT_N_CTX_SEQ):
        self.lm = lm
        self._batch = lm.engine.new_batch(n_seq, n_ctx_seq)
        self.n_seq, self.n_ctx_seq = n_seq, n_ctx_seq
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        self._batch = None  # frees its KV cache

    def __enter__(self) -> BatchedGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.lm.engine.token_to_piece(token)
        return piece

    def _accept(self, slot: _Slot, event) -> Optional[str]:
        """Adds a generated token to a slot; returns a finish reason when the sequence is done."""
        if event.finish_reason == "stop":  # the engine's: an end-of-generation token, not output
            return "stop"
        slot.tokens.append(event.token)
        slot.text += self._piece(event.token)
        if slot.job.stop and slot.job.stop.encode() in slot.text:  # text: the engine does not see it
            return "stop"
        return event.finish_reason

    def _result(self, slot: _Slot, finish: str) -> GenResult:
        text = bytes(slot.text)
        if slot.job.stop:
            cut = text.find(slot.job.stop.encode())
            text = text if cut < 0 else text[:cut]
        return GenResult(slot.job.key, slot.tokens, text.decode("utf-8", errors="replace"), finish,
                         time.perf_counter() - slot.t0)

    @contextlib.contextmanager
    def _leaving(self, slots: dict[int, _Slot]) -> Iterator[None]:
        """Whatever ends a generation (an abandoned iterator, an error), its unfinished sequences
        leave the engine's batch, so the next generation starts empty."""
        try:
            yield
        finally:
            for seq_id in slots:
                self._batch.remove(seq_id)

    def generate(self, jobs: Iterable[GenJob]) -> Iterator[GenResult]:
        """Yields one GenResult per job, in the order the jobs finish."""
        if self._batch is None:
            raise RuntimeError("this BatchedGenerator has been closed")
        queue = deque(jobs)
        for job in queue:
            if not 1 <= len(job.prompt_ids) < self.n_ctx_seq:
                raise ValueError(f"job {job.key}: a prompt of {len(job.prompt_ids)} tokens does not fit "
                                 f"the {self.n_ctx_seq}-token context of a sequence")
        batch = self._batch
        slots: dict[int, _Slot] = {}  # by the engine's sequence id
        with self.lm._idle("decode a batch"), self._leaving(slots):
            while queue or slots:
                while queue and batch.n_active < batch.capacity:  # fill free slots
                    job = queue.popleft()
                    slot = _Slot(job, time.perf_counter())
                    event = batch.add(list(job.prompt_ids), job.sampling.native(),
                                      generation_seed(job.sampling), job.max_new_tokens)
                    finish = self._accept(slot, event)
                    if finish is None:
                        slots[event.id] = slot
                        continue
                    if event.finish_reason is None:
                        batch.remove(event.id)  # a stop string in its first token
                    yield self._result(slot, finish)
                if not slots:
                    continue
                for event in batch.step():
                    slot = slots[event.id]
                    finish = self._accept(slot, event)
                    if finish is None:
                        continue
                    if event.finish_reason is None:
                        batch.remove(event.id)
                    del slots[event.id]
                    yield self._result(slot, finish)

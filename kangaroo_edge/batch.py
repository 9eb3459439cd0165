"""Many sequences at once on our engine: the data stages' generator (training answers, built-in
prompts) and the server's parallel requests.

The engine's BatchDecoder (native/batch_decoder.h) runs one row per active sequence through one
weight pass, each sequence in a KV block of its own, and gives every row the bits it would get
alone: a sequence's tokens do not depend on what runs beside it, sampled ones included (each
job's sampler is seeded by its `SamplingParams.seed`, as `KangarooLM.generate(seed=...)` seeds its
own; the repetition penalties count each sequence's own output). The batch decodes plainly: no
drafts.

Continuous batching: a sequence joins whenever a slot is free and leaves when it ends. The engine
decides when a sequence ends (an end-of-generation token, its token budget, a full block); this
module adds stop strings, which need the text (text.TextAssembler, as a single generation's).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

from .decoding import generation_seed
from .text import TextAssembler, stop_list
from .types import GenerationStats, SamplingParams

if TYPE_CHECKING:
    from .llm import KangarooLM

DEFAULT_N_SEQ = 16  # the most the kernels multiply in one pass (_native.MAX_BATCH_SEQUENCES)
# the torch generator's (train/torch_generator.py): on a Xeon with AMX, 64 rows a product give ~17x one row's tokens/s
DEFAULT_TORCH_N_SEQ = 64
DEFAULT_N_CTX_SEQ = 2048


@dataclass(frozen=True)
class GenJob:
    key: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = SamplingParams()  # greedy by default; seed None: a random one
    stop: Union[str, Sequence[str], None] = None  # stop string(s), checked on the generated text


@dataclass
class SeqUpdate:
    """What one engine step (or a sequence's arrival) added to a sequence."""
    key: str
    token_ids: list[int]          # output tokens (an end-of-generation token is not one)
    text: str                     # the text they release (held back while it may start a stop string)
    finish_reason: Optional[str] = None   # "stop" | "length" on the sequence's last update
    stats: Optional[GenerationStats] = None  # its record, on the last update


@dataclass
class GenResult:
    key: str
    token_ids: list[int]          # generated tokens, end-of-generation token excluded
    text: str                     # their text, cut before the stop string
    finish_reason: str            # "stop" (end-of-generation token or stop string) | "length"
    seconds: float                # from the job's start to its end (shared with the batch)


@dataclass
class _Slot:
    job: GenJob
    text: TextAssembler
    n_output: int = 0


class SequenceBatch:
    """Up to `n_seq` sequences of at most `n_ctx_seq` tokens decoded together with the engine of
    `lm` (its weights and threads). Use it inside `running()`, which keeps `lm` from generating
    meanwhile and, however it is left, leaves the engine's batch empty."""

    def __init__(self, lm: KangarooLM, n_seq: int = DEFAULT_N_SEQ, n_ctx_seq: int = DEFAULT_N_CTX_SEQ):
        self.lm = lm
        self._batch = lm.engine.new_batch(n_seq, n_ctx_seq)
        self.capacity, self.n_ctx_seq = n_seq, n_ctx_seq
        self._pieces: dict[int, bytes] = {}
        self._slots: dict[int, _Slot] = {}  # by the engine's sequence id
        self._ids: dict[str, int] = {}      # the engine's sequence id by job key

    @property
    def kv_bytes(self) -> int:
        return self._batch.kv_bytes

    @property
    def n_active(self) -> int:
        return len(self._slots)

    @contextlib.contextmanager
    def running(self) -> Iterator[SequenceBatch]:
        with self.lm._idle("decode a batch"):
            try:
                yield self
            finally:
                for key in list(self._ids):
                    self.remove(key)

    def check(self, job: GenJob) -> None:
        """ValueError when the job's prompt does not fit a sequence."""
        if not 1 <= len(job.prompt_ids) < self.n_ctx_seq:
            raise ValueError(f"job {job.key}: a prompt of {len(job.prompt_ids)} tokens does not fit "
                             f"the {self.n_ctx_seq}-token context of a sequence")

    def add(self, job: GenJob) -> SeqUpdate:
        """Prefills the job's prompt into a free slot; its first token's update."""
        self.check(job)
        if job.key in self._ids:
            raise ValueError(f"job {job.key} is already in the batch")
        if self.n_active >= self.capacity:
            raise RuntimeError(f"all {self.capacity} sequences of the batch are taken")
        event = self._batch.add(list(job.prompt_ids), job.sampling.native(), generation_seed(job.sampling),
                                job.max_new_tokens)
        slot = _Slot(job, TextAssembler(self._piece, stop_list(job.stop)))
        self._slots[event.id], self._ids[job.key] = slot, event.id
        return self._update(event)

    def step(self) -> list[SeqUpdate]:
        """One weight pass over every active sequence: an update each."""
        return [self._update(e) for e in self._batch.step()] if self._slots else []

    def end(self, key: str) -> SeqUpdate:
        """Ends an active sequence now (a deadline): finish "length", the text held back released."""
        slot, seq_id = self._leave(key)
        stats = self._batch.end(seq_id, slot.n_output)
        return SeqUpdate(key, [], slot.text.flush(), "length", stats)

    def remove(self, key: str) -> None:
        """Drops an active sequence without a result (a cancelled request)."""
        _, seq_id = self._leave(key)
        self._batch.remove(seq_id)

    def _leave(self, key: str) -> tuple[_Slot, int]:
        seq_id = self._ids.pop(key)
        return self._slots.pop(seq_id), seq_id

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.lm.engine.token_to_piece(token)
        return piece

    def _update(self, event) -> SeqUpdate:
        slot = self._slots[event.id]
        key = slot.job.key
        if event.finish_reason == "stop":  # the engine's: an end-of-generation token, not output
            self._leave(key)
            return SeqUpdate(key, [], slot.text.flush(), "stop", event.stats)
        slot.n_output += 1
        text, hit = slot.text.add(event.token)
        if hit:  # a stop string: the text cannot see further
            self._leave(key)
            stats = event.stats if event.finish_reason else self._batch.end(event.id, slot.n_output)
            return SeqUpdate(key, [event.token], text, "stop", stats)
        if event.finish_reason is None:
            return SeqUpdate(key, [event.token], text)
        self._leave(key)
        return SeqUpdate(key, [event.token], text + slot.text.flush(), event.finish_reason, event.stats)


class BatchedGenerator:
    """Decodes jobs `n_seq` at a time with the engine of `lm` (its weights and threads; while a
    batch runs, `lm` itself cannot generate)."""

    def __init__(self, lm: KangarooLM, n_seq: int = DEFAULT_N_SEQ, n_ctx_seq: int = DEFAULT_N_CTX_SEQ):
        self.lm = lm
        self._batch: Optional[SequenceBatch] = SequenceBatch(lm, n_seq, n_ctx_seq)
        self.n_seq, self.n_ctx_seq = n_seq, n_ctx_seq

    def close(self) -> None:
        self._batch = None  # frees its KV cache

    def __enter__(self) -> BatchedGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, jobs: Iterable[GenJob]) -> Iterator[GenResult]:
        """Yields one GenResult per job, in the order the jobs finish."""
        if self._batch is None:
            raise RuntimeError("this BatchedGenerator has been closed")
        batch, queue = self._batch, deque(jobs)
        for job in queue:
            batch.check(job)
        started: dict[str, float] = {}
        tokens: dict[str, list[int]] = {}
        texts: dict[str, list[str]] = {}

        def collect(u: SeqUpdate) -> Optional[GenResult]:
            tokens[u.key] += u.token_ids
            texts[u.key].append(u.text)
            if u.finish_reason is None:
                return None
            return GenResult(u.key, tokens.pop(u.key), "".join(texts.pop(u.key)), u.finish_reason,
                             time.perf_counter() - started.pop(u.key))

        with batch.running():
            while queue or batch.n_active:
                while queue and batch.n_active < batch.capacity:  # fill free slots
                    job = queue.popleft()
                    started[job.key], tokens[job.key], texts[job.key] = time.perf_counter(), [], []
                    done = collect(batch.add(job))
                    if done:
                        yield done
                for u in batch.step():
                    done = collect(u)
                    if done:
                        yield done

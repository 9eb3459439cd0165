"""The one thread that uses the model, and the bounded queue of requests waiting for it.

A KangarooLM generates one sequence at a time (batch size 1), so requests are served one at a
time, in the order they came. Everything that touches the model (chat template, tokenizer,
generation) runs on this thread; the event loop only moves events. A job is cancelled by its
client's disconnect or by shutdown: the worker looks between generation steps and closes the
stream, which leaves the model consistent for the next request (the KV cache keeps what was
committed). Consecutive turns of a conversation reuse the cached prompt prefix: the engine
keeps the longest common token prefix of the previous sequence and the new prompt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import jinja2

from ..decoding import DraftOptions
from ..llm import KangarooLM
from ..types import GenerationChunk, GenerationStats
from .errors import APIError, context_length_exceeded, internal_error, invalid_value, queue_full, shutting_down
from .prompt import chat_prompt_ids
from .validation import CHAT, GenerationRequest

log = logging.getLogger("kangaroo_edge.server")

SERVICE_TIME_SMOOTHING = 0.2  # weight of the latest request in the mean service time (Retry-After)


# ---- what a job reports to its request handler, in order: Started, Text..., Finished | Failed

@dataclass
class Started:
    prompt_tokens: int


@dataclass
class Text:
    text: str


@dataclass
class Finished:
    text: str  # the last piece of text (all of it when the response is not streamed)
    finish_reason: str
    stats: GenerationStats
    draft: DraftOptions


@dataclass
class Failed:
    error: APIError


Event = Union[Started, Text, Finished, Failed]


def client_disconnected() -> APIError:
    return APIError(499, "the client closed the connection", code="client_disconnected")


class Job:
    """One request on its way through the queue. The worker thread posts events; the request's
    handler awaits them on the event loop."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self._loop = loop
        self._events: "asyncio.Queue[Event]" = asyncio.Queue()
        self._cancelled = threading.Event()
        self.cancel_reason: Optional[APIError] = None
        self.on_cancel: Callable[["Job"], None] = lambda job: None  # the worker's: leave the queue

    def cancel(self, reason: APIError) -> None:
        """Thread-safe; the first reason wins. A finished job ignores it."""
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()
            self.on_cancel(self)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def post(self, event: Event) -> None:
        """From the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server has gone, nobody listens
            pass

    async def next(self) -> Event:
        return await self._events.get()


class ModelWorker:
    """timeout_s: a generation ends ("length") when it has run this long. parse_special: special-token
    text in chat messages is parsed as special tokens (else it stays text: see prompt.py)."""

    def __init__(self, lm: KangarooLM, max_queue: int, timeout_s: float = math.inf, parse_special: bool = False):
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.lm = lm
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.parse_special = parse_special
        self._queue: "collections.deque[Job]" = collections.deque()
        # guards the queue, _closing and _current; reentrant: a job cancelled under it leaves the queue
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)  # a job was queued, or the worker must end
        self._closing = False
        self._current: Optional[Job] = None
        self._current_since = 0.0  # time.monotonic() when the current job started
        self._mean_service_s = 1.0
        self._thread = threading.Thread(target=self._run, name="kangaroo-edge-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> Job:
        """Queues a request; raises APIError 503 when the queue is full or the server is closing."""
        job = Job(request, loop)
        with self._lock:
            if self._closing:
                raise shutting_down()
            if len(self._queue) >= self.max_queue:
                raise queue_full(self.max_queue, self._retry_after_s())
            job.on_cancel = self._leave_queue
            self._queue.append(job)
            self._ready.notify()
        return job

    def waiting(self) -> int:
        return len(self._queue)

    def busy_seconds(self) -> float:
        """How long the model has been on its current request; 0 when idle."""
        with self._lock:
            return time.monotonic() - self._current_since if self._current is not None else 0.0

    def _leave_queue(self, job: Job) -> None:
        """A cancelled job that still waits leaves the queue now, freeing its place, rather than when
        its turn comes."""
        with self._lock:
            try:
                self._queue.remove(job)
            except ValueError:  # running, or already taken
                return
        job.post(Failed(job.cancel_reason))
        log.info("%s request left the queue: %s", job.request.endpoint, job.cancel_reason.message)

    def cancel_all(self, reason: APIError) -> None:
        """Shutdown: refuses new requests, fails the waiting ones, stops the running one."""
        with self._lock:
            self._closing = True
            waiting = list(self._queue)
            self._queue.clear()
            for job in waiting:
                job.cancel(reason)
                job.post(Failed(reason))
            if self._current is not None:
                self._current.cancel(reason)
            self._ready.notify()  # the worker ends once the queue is empty and _closing is set

    def close(self, timeout_s: float) -> bool:
        """Stops the worker; True when its thread ended within timeout_s."""
        if not self._closing:
            self.cancel_all(shutting_down())
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _retry_after_s(self) -> int:
        """Seconds until a queue place is likely free: one mean service time."""
        return max(1, math.ceil(self._mean_service_s))

    # ---- the worker thread -------------------------------------------------------------

    def _take(self) -> Optional[Job]:
        """The next job, waiting for one; None when the worker must end."""
        with self._lock:
            while not self._queue and not self._closing:
                self._ready.wait()
            if not self._queue:
                return None
            self._current, self._current_since = self._queue.popleft(), time.monotonic()
            return self._current

    def _run(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            try:
                self._serve(job)
            except Exception:  # a bug: this request fails, the server goes on
                log.exception("request failed")
                job.post(Failed(internal_error("the generation failed")))
            finally:
                with self._lock:
                    self._current = None

    def _serve(self, job: Job) -> None:
        r = job.request
        if job.cancelled:
            job.post(Failed(job.cancel_reason))
            log.info("%s request dropped before it started: %s", r.endpoint, job.cancel_reason.message)
            return
        try:
            ids = self._prompt_ids(r)
            if not r.cache_prompt:
                self.lm.reset()
            chunks = self.lm.generate(ids, r.max_tokens, sampling=r.sampling, stop=r.stop, stream=True,
                                      speculative=r.speculative, tau=r.tau, gamma=r.gamma, lookup=r.lookup,
                                      grammar=r.grammar)
        except APIError as e:
            job.post(Failed(e))
            return
        except ValueError as e:  # the model's own checks: token ids, an empty prompt...
            job.post(Failed(invalid_value(None, str(e))))
            return
        job.post(Started(len(ids)))
        try:
            self._stream(job, chunks)
        finally:
            chunks.close()  # releases the model when the loop was left early

    def _stream(self, job: Job, chunks: Iterator[GenerationChunk]) -> None:
        """Posts the chunks' text; ends the generation at its timeout, or when the job is cancelled."""
        r = job.request
        deadline = time.monotonic() + self.timeout_s
        n_output = 0
        held: list[str] = []  # the text of a response that is not streamed, sent at the end
        for chunk in chunks:
            n_output += len(chunk.token_ids)
            if chunk.finish_reason is None and time.monotonic() >= deadline:
                log.info("%s request timed out after %d tokens (--timeout %g s)", r.endpoint, n_output, self.timeout_s)
                # the record as the decoder has it so far: the stream is closed below
                chunk = GenerationChunk(chunk.text, chunk.token_ids, "length", self.lm.engine.stats(),
                                        self.lm.draft_options(r.speculative, r.tau, r.gamma, r.lookup))
            if chunk.finish_reason is not None:
                job.post(Finished("".join(held) + chunk.text, chunk.finish_reason, chunk.stats, chunk.draft))
                self._log(r, chunk.stats)
                return
            if job.cancelled:
                break
            if not chunk.text:
                continue
            if r.stream:
                job.post(Text(chunk.text))
            else:  # one event at the end instead of a wake-up of the event loop per step
                held.append(chunk.text)
        reason = job.cancel_reason or internal_error("the generation ended without a finish reason")
        job.post(Failed(reason))
        log.info("%s request stopped after %d tokens: %s", r.endpoint, n_output, reason.message)

    def _prompt_ids(self, r: GenerationRequest) -> list[int]:
        """The prompt as token ids; APIError 400 when it does not fit the context."""
        lm = self.lm
        if r.endpoint == CHAT:
            try:
                text = lm.apply_chat_template(r.messages, tools=r.tools)
            except (ValueError, jinja2.TemplateError) as e:
                raise invalid_value("messages", f"the model's chat template cannot render these messages: {e}") from None
            ids, param = chat_prompt_ids(lm, text, r.messages, self.parse_special, r.tools), "messages"
        else:
            ids, param = (lm.tokenize(r.prompt) if isinstance(r.prompt, str) else list(r.prompt)), "prompt"
        if len(ids) > lm.n_ctx:
            raise context_length_exceeded(param, len(ids), lm.n_ctx)
        return ids

    def _log(self, r: GenerationRequest, stats: GenerationStats) -> None:
        seconds = (stats.prompt_ms + stats.predicted_ms) * 1e-3
        self._mean_service_s += SERVICE_TIME_SMOOTHING * (seconds - self._mean_service_s)
        spec = f", {stats.mean_accepted:.2f} tokens/verification" if stats.cycles else ""
        log.info("%s: %d prompt tokens (%d cached) + %d generated in %.2f s, %.1f tokens/s%s; %d waiting",
                 r.endpoint, stats.prompt_tokens, stats.cache_n, stats.predicted_n, seconds,
                 stats.predicted_per_second, spec, self.waiting())

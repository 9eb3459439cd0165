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
import queue
import threading
from dataclasses import dataclass
from typing import Any, Optional, Union

import jinja2

from ..llm import KangarooLM
from .errors import APIError, context_length_exceeded, internal_error, invalid_value, queue_full, shutting_down
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
    stats: dict[str, Any]


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

    def cancel(self, reason: APIError) -> None:
        """Thread-safe; the first reason wins. A finished job ignores it."""
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()

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
    def __init__(self, lm: KangarooLM, max_queue: int):
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.lm = lm
        self.max_queue = max_queue
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()  # submit against shutdown
        self._closing = False
        self._current: Optional[Job] = None
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
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise queue_full(self.max_queue, self._retry_after_s()) from None
        return job

    def waiting(self) -> int:
        return self._queue.qsize()

    def cancel_all(self, reason: APIError) -> None:
        """Shutdown: refuses new requests, fails the waiting ones, stops the running one."""
        with self._lock:
            first = not self._closing
            self._closing = True
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.cancel(reason)
                    job.post(Failed(reason))
            current = self._current
            if current is not None:
                current.cancel(reason)
            if first:
                self._queue.put_nowait(None)  # the worker's signal to end; the queue was just emptied

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

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._current = job
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
                                      speculative=r.speculative, tau=r.tau, gamma=r.gamma, lookup=r.lookup)
        except APIError as e:
            job.post(Failed(e))
            return
        except ValueError as e:  # the model's own checks: token ids, an empty prompt...
            job.post(Failed(invalid_value(None, str(e))))
            return
        job.post(Started(len(ids)))
        n_tokens, held = 0, []  # held: the text of a response that is not streamed, sent at the end
        try:
            for chunk in chunks:
                n_tokens += len(chunk.token_ids)
                if chunk.finish_reason is not None:
                    job.post(Finished("".join(held) + chunk.text, chunk.finish_reason, chunk.stats or {}))
                    self._log(r, chunk.stats or {})
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
            log.info("%s request stopped after %d tokens: %s", r.endpoint, n_tokens, reason.message)
        finally:
            chunks.close()  # releases the model when the loop was left early

    def _prompt_ids(self, r: GenerationRequest) -> list[int]:
        """The prompt as token ids; APIError 400 when it does not fit the context."""
        lm = self.lm
        if r.endpoint == CHAT:
            try:
                text = lm.apply_chat_template(r.messages)
            except (ValueError, jinja2.TemplateError) as e:
                raise invalid_value("messages", f"the model's chat template cannot render these messages: {e}") from None
            ids, param = lm.tokenize(text), "messages"
        else:
            ids, param = (lm.tokenize(r.prompt) if isinstance(r.prompt, str) else list(r.prompt)), "prompt"
        if len(ids) > lm.n_ctx:
            raise context_length_exceeded(param, len(ids), lm.n_ctx)
        return ids

    def _log(self, r: GenerationRequest, stats: dict) -> None:
        seconds = stats.get("prompt_seconds", 0.0) + stats.get("generation_seconds", 0.0)
        self._mean_service_s += SERVICE_TIME_SMOOTHING * (seconds - self._mean_service_s)
        spec = ""
        if stats.get("speculative"):
            spec = f", {stats['mean_accepted']:.2f} tokens/verification" if stats.get("cycles") else ", speculation off"
        log.info("%s: %d prompt tokens (%d cached) + %d generated in %.2f s, %.1f tokens/s%s; %d waiting",
                 r.endpoint, stats.get("n_prompt_tokens", 0), stats.get("n_cached_tokens", 0), stats.get("n_tokens", 0),
                 seconds,
                 stats.get("tokens_per_second", 0.0), spec, self.waiting())

"""A job's events -> the HTTP response: one JSON body, or server-sent events as OpenAI streams
them (`data: {chunk}` events, then `data: [DONE]`).

While a request waits in the queue or generates, a watcher reads the connection: when the
client goes away it cancels the job, so that the model stops within a step and serves the next
request. A stream also stops when writing to the client fails.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, Optional

from .errors import APIError
from .shapes import SSE_DONE, SSE_KEEPALIVE, Shaper, sse_event
from .worker import Event, Failed, Finished, Job, Started, Text, client_disconnected

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]  # proxies such as nginx: do not buffer the stream


def watch_disconnect(receive: Receive, job: Job) -> "asyncio.Task[None]":
    """A task that cancels the job when the client disconnects (cancel the task when done)."""
    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                job.cancel(client_disconnected())
                return
    return asyncio.ensure_future(watch())


class JobEvents:
    """A job's events, awaited with an optional timeout that loses none: a get that times out
    stays pending and delivers its event to the next call."""

    def __init__(self, job: Job):
        self.job = job
        self._pending: "Optional[asyncio.Future[Event]]" = None

    async def next(self, timeout_s: Optional[float] = None) -> Optional[Event]:
        """The next event, or None when none came within timeout_s."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.job.next())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout_s)
        if not done:
            return None
        event, self._pending = self._pending.result(), None
        return event

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


async def wait_started(events: JobEvents, timeout_s: Optional[float] = None) -> Optional[Started]:
    """The job's first event: Started, or its error raised (queue, validation, context length);
    None when it has not come within timeout_s."""
    event = await events.next(timeout_s)
    if isinstance(event, Failed):
        raise event.error
    assert event is None or isinstance(event, Started), event
    return event


async def whole_body(events: JobEvents, shaper: Shaper) -> dict:
    parts = []
    while True:
        event = await events.next()
        if isinstance(event, Text):
            parts.append(event.text)
        elif isinstance(event, Finished):
            parts.append(event.text)
            return shaper.whole("".join(parts), event.finish_reason, event.stats, event.draft)
        else:
            assert isinstance(event, Failed), event
            raise event.error


class EventStream:
    """An ASGI response streaming a job. It owns the job's disconnect watcher from here on.
    started is None for a job still waiting in the queue: its errors come as events then. While
    nothing comes for keepalive_s (the queue, the prompt's evaluation) it sends SSE comments,
    which clients ignore and which keep proxies from closing an idle connection."""

    def __init__(self, events: JobEvents, shaper: Shaper, started: Optional[Started],
                 watcher: "asyncio.Task[None]", keepalive_s: float):
        self._events, self._shaper, self._started, self._watcher = events, shaper, started, watcher
        self._keepalive_s = keepalive_s

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            async for data in self._stream():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote (uvicorn's ClientDisconnected)
            pass
        finally:
            self._events.job.cancel(client_disconnected())  # a no-op for a job that finished
            self._events.close()
            self._watcher.cancel()

    async def _stream(self) -> AsyncIterator[bytes]:
        """The events, with keep-alive comments where none came in time."""
        events = self._events_of_job()
        pending: "Optional[asyncio.Future[bytes]]" = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=self._keepalive_s)
                if not done:
                    yield SSE_KEEPALIVE
                    continue
                try:
                    data = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield data
        finally:
            if pending is not None:
                pending.cancel()

    async def _events_of_job(self) -> AsyncIterator[bytes]:
        shaper = self._shaper
        if self._started is None:
            try:
                self._started = await wait_started(self._events)
            except APIError as e:  # the response has begun: the error is an event
                yield sse_event(e.body())
                return
        for first in shaper.first_chunks():
            yield sse_event(first)
        while True:
            event = await self._events.next()
            if isinstance(event, Text):
                for piece in shaper.text_chunks(event.text):
                    yield sse_event(piece)
            elif isinstance(event, Finished):
                for piece in shaper.text_chunks(event.text, end=True):
                    yield sse_event(piece)
                for last in shaper.last_chunks(event.finish_reason, event.stats, event.draft):
                    yield sse_event(last)
                if shaper.sends_done:
                    yield SSE_DONE
                return
            else:  # an error after the stream began: OpenAI sends it as an event
                assert isinstance(event, Failed), event
                yield sse_event(event.error.body())
                return


__all__ = ["EventStream", "JobEvents", "wait_started", "watch_disconnect", "whole_body"]

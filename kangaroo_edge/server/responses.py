"""A job's events -> the HTTP response: one JSON body, or server-sent events as OpenAI streams
them (`data: {chunk}` events, then `data: [DONE]`).

While a request waits in the queue or generates, a watcher reads the connection: when the
client goes away it cancels the job, so that the model stops within a step and serves the next
request. A stream also stops when writing to the client fails.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from .shapes import SSE_DONE, Shaper, sse_event, timings, usage
from .worker import Failed, Finished, Job, Started, Text, client_disconnected

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


async def wait_started(job: Job) -> Started:
    """The job's first event: Started, or its error raised (queue, validation, context length)."""
    event = await job.next()
    if isinstance(event, Failed):
        raise event.error
    assert isinstance(event, Started), event
    return event


async def whole_body(job: Job, shaper: Shaper, started: Started) -> dict:
    parts = []
    while True:
        event = await job.next()
        if isinstance(event, Text):
            parts.append(event.text)
        elif isinstance(event, Finished):
            parts.append(event.text)
            return shaper.whole("".join(parts), event.finish_reason, *_usage_and_timings(started, event))
        else:
            assert isinstance(event, Failed), event
            raise event.error


class EventStream:
    """An ASGI response streaming a job. It owns the job's disconnect watcher from here on."""

    def __init__(self, job: Job, shaper: Shaper, started: Started, watcher: "asyncio.Task[None]"):
        self._job, self._shaper, self._started, self._watcher = job, shaper, started, watcher

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            async for data in self._events():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote (uvicorn's ClientDisconnected)
            pass
        finally:
            self._job.cancel(client_disconnected())  # a no-op for a job that finished
            self._watcher.cancel()

    async def _events(self) -> AsyncIterator[bytes]:
        shaper = self._shaper
        if shaper.chat:
            yield sse_event(shaper.chunk("", first=True))
        while True:
            event = await self._job.next()
            if isinstance(event, Text):
                yield sse_event(shaper.chunk(event.text))
            elif isinstance(event, Finished):
                if event.text:
                    yield sse_event(shaper.chunk(event.text))
                usage_, timings_ = _usage_and_timings(self._started, event)
                last = shaper.chunk("", event.finish_reason)
                last["timings"] = timings_
                yield sse_event(last)
                if shaper.include_usage:
                    yield sse_event(shaper.usage_chunk(usage_))
                yield SSE_DONE
                return
            else:  # an error after the stream began: OpenAI sends it as an event
                assert isinstance(event, Failed), event
                yield sse_event(event.error.body())
                return


def _usage_and_timings(started: Started, finished: Finished) -> tuple[dict, dict]:
    stats: dict[str, Any] = finished.stats
    return (usage(started.prompt_tokens, stats["n_tokens"], stats["n_cached_tokens"]),
            timings(stats, stats["n_cached_tokens"]))


__all__ = ["EventStream", "wait_started", "watch_disconnect", "whole_body"]

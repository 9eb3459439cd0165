"""uvicorn, the HTTP server under the application, with our shutdown: Ctrl-C or SIGTERM fails the
waiting requests with 503, stops the running generation within a step, lets the open responses
finish (up to a grace period), and returns, so that the caller frees the model and exits 0.

uvicorn because it is the reference ASGI server (maintained with Starlette), pure Python in its
plain install (h11), and handles keep-alive, streaming and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Any, Iterator, Optional

import uvicorn

from .errors import shutting_down
from .worker import ModelWorker

GRACE_SECONDS = 10  # open responses get this long to finish at shutdown
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HttpServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, worker: ModelWorker, model_id: str):
        super().__init__(config)
        self._worker = worker
        self._model_id = model_id
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.url: Optional[str] = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:  # the line the user (and the tests) wait for; the port is the bound one (--port 0)
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            print(f"kangaroo-edge serve: {self._model_id} at {self.url}/v1 (Ctrl-C to stop)", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, without raising the signal again after the shutdown: SIGTERM's default
        action would kill the process before the model is freed and the exit status is ours."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._loop = asyncio.get_running_loop()
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        # In a signal handler: the worker's locks may be held by the interrupted code, so the
        # cancellation runs on the event loop, right after this handler returns.
        if self._loop is not None and not self.should_exit:
            self._loop.call_soon_threadsafe(self._worker.cancel_all, shutting_down())
        super().handle_exit(sig, frame)


def serve(app: Any, worker: ModelWorker, model_id: str, host: str, port: int, log_level: str = "info") -> None:
    """Serves until Ctrl-C or SIGTERM."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                            timeout_graceful_shutdown=GRACE_SECONDS, server_header=False)
    HttpServer(config, worker, model_id).run()

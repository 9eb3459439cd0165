"""The ASGI application: routes, the API key check, request bodies, errors as OpenAI shapes.

Starlette because it is small and well kept (the toolkit FastAPI is built on, by the same
maintainers as uvicorn), streams through plain ASGI, and leaves validation to us: the errors
must be OpenAI's shape, not a framework's. No route lets an exception escape: a bug in one
request becomes a 500 for that request, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import (APIError, body_too_large, host_not_allowed, internal_error, invalid_api_key, model_not_found,
                     unsupported_media_type)
from .responses import EventStream, JobEvents, wait_started, watch_disconnect, whole_body
from .shapes import Shaper, model_card, model_list
from . import native
from .validation import (CHAT, COMPLETION, NATIVE_COMPLETION, GenerationDefaults, parse_detokenize, parse_infill,
                         parse_messages, parse_request, parse_tokenize)
from .worker import ModelWorker, client_disconnected

log = logging.getLogger("kangaroo_edge.server")

OPEN_PATHS = ("/health",)  # answered without an API key (load balancers, `curl /health`)
STUCK_FACTOR = 2  # /health: "stuck" when one request has run this many times the timeout (a cut comes between steps)
DRAIN_FACTOR = 4  # a body over the limit is read (and dropped) up to this multiple, so the client sees the 413


@dataclass(frozen=True)
class ServerConfig:
    model_id: str  # the name in /v1/models and in every response
    defaults: GenerationDefaults
    api_key: Optional[str] = None  # None: no key required
    max_request_bytes: int = 4 << 20
    cors_origins: tuple[str, ...] = ()  # () : no CORS headers (browsers on other origins are refused)
    strict_model: bool = False  # True: a request's `model` must be model_id (else 404); False: any name
    allowed_hosts: Optional[frozenset[str]] = None  # Host header names answered (lower case, no port); None: any
    sse_keepalive_s: float = 15.0  # a stream with nothing to send for this long sends a comment
    chat_template: Optional[str] = None  # --chat-template, for /props (None: the GGUF's)


def create_app(worker: ModelWorker, config: ServerConfig) -> Starlette:
    api = _Api(worker, config)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", api.model, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        # llama-server's own
        Route("/completion", api.native_completion, methods=["POST"]),
        Route("/infill", api.infill, methods=["POST"]),
        Route("/tokenize", api.tokenize, methods=["POST"]),
        Route("/detokenize", api.detokenize, methods=["POST"]),
        Route("/apply-template", api.apply_template, methods=["POST"]),
        Route("/props", api.props, methods=["GET"]),
    ]
    middleware = []
    if config.allowed_hosts is not None:  # first: a refused Host gets no other answer
        middleware.append(Middleware(HostCheck, allowed=config.allowed_hosts))
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    if config.api_key:
        middleware.append(Middleware(BearerAuth, api_key=config.api_key))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_exception})


class _Api:
    def __init__(self, worker: ModelWorker, config: ServerConfig):
        self.worker, self.config = worker, config
        self.created = int(time.time())

    async def health(self, request: Request) -> Response:
        """ok, or 503 "stuck" when one request has held the model far past its timeout."""
        busy_s = self.worker.busy_seconds()
        stuck = busy_s > STUCK_FACTOR * self.worker.timeout_s
        body = {"status": "stuck" if stuck else "ok", "waiting": self.worker.waiting(),
                "max_queue": self.worker.max_queue, "busy_seconds": busy_s}
        return JSONResponse(body, status_code=503 if stuck else 200)

    async def models(self, request: Request) -> Response:
        return JSONResponse(model_list(self.config.model_id, self.created))

    async def model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        if name != self.config.model_id:
            return error_response(model_not_found(name, self.config.model_id))
        return JSONResponse(model_card(name, self.created))

    async def chat_completions(self, request: Request) -> Response:
        return await _answer(lambda: self._generate(request, CHAT))

    async def completions(self, request: Request) -> Response:
        return await _answer(lambda: self._generate(request, COMPLETION))

    async def native_completion(self, request: Request) -> Response:
        return await _answer(lambda: self._generate(request, NATIVE_COMPLETION))

    async def infill(self, request: Request) -> Response:
        def with_prompt(body: Any) -> Any:
            return {**body, "prompt": native.infill_ids(self.worker.lm, parse_infill(body))}
        return await _answer(lambda: self._generate(request, NATIVE_COMPLETION, with_prompt))

    async def tokenize(self, request: Request) -> Response:
        return await self._native(request, lambda body: native.tokenize(self.worker.lm, parse_tokenize(body)))

    async def detokenize(self, request: Request) -> Response:
        return await self._native(request, lambda body: native.detokenize(self.worker.lm, parse_detokenize(body)))

    async def apply_template(self, request: Request) -> Response:
        return await self._native(request, lambda body: native.apply_template(self.worker.lm, parse_messages(body)))

    async def props(self, request: Request) -> Response:
        c = self.config
        return JSONResponse(native.props(self.worker.lm, c.model_id, c.defaults, c.chat_template, self.worker.parallel))

    async def _native(self, request: Request, answer: Callable[[Any], dict]) -> Response:
        async def handler() -> Response:
            return JSONResponse(answer(await read_json(request, self.config.max_request_bytes)))
        return await _answer(handler)

    async def _generate(self, request: Request, endpoint: str, rewrite: Callable[[Any], Any] = lambda b: b) -> Any:
        body = rewrite(await read_json(request, self.config.max_request_bytes))
        req = parse_request(endpoint, body, self.config.model_id, self.config.defaults, self.config.strict_model)
        job = self.worker.submit(req, asyncio.get_running_loop())
        watcher = watch_disconnect(request.receive, job)
        events = JobEvents(job)
        streaming = False
        try:
            # a stream still waiting after the keep-alive interval starts now, with keep-alive comments
            started = await wait_started(events, self.config.sse_keepalive_s if req.stream else None)
            shaper = Shaper(req)
            if req.stream:
                streaming = True  # the stream owns the watcher now
                return EventStream(events, shaper, started, watcher, self.config.sse_keepalive_s)
            return JSONResponse(await whole_body(events, shaper))
        finally:
            if not streaming:
                watcher.cancel()
                events.close()
                job.cancel(client_disconnected())  # a no-op for a job that finished


async def _answer(handler: Callable[[], Awaitable[Any]]) -> Any:
    """Runs a route; its errors become OpenAI-shaped responses."""
    try:
        return await handler()
    except APIError as e:
        return error_response(e)
    except Exception:
        log.exception("unexpected error in a request")
        return error_response(internal_error("unexpected error"))


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Routing errors (unknown path 404, wrong method 405) in OpenAI's shape."""
    what = {404: f"Unknown path {request.url.path}: this server has /v1/chat/completions, /v1/completions, "
                 "/v1/models, /health and llama-server's /completion, /infill, /tokenize, /detokenize, /apply-template, /props",
            405: f"Method {request.method} is not allowed on {request.url.path}"}
    e = APIError(exc.status_code, what.get(exc.status_code, str(exc.detail)),
                 code="not_found" if exc.status_code == 404 else None, headers=dict(exc.headers or {}))
    return error_response(e)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, within `limit` bytes (413 beyond). NaN and Infinity are not JSON. Only an
    application/json body is read (415 else): a web page can post text/plain to any address
    without asking the server first (a CORS preflight), but not JSON."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise unsupported_media_type(media_type)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise body_too_large(limit)  # not worth reading: the connection closes after the answer
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > DRAIN_FACTOR * limit:
            break
    if len(body) > limit:
        raise body_too_large(limit)
    if not body:
        raise APIError(400, "The request body is empty: send a JSON object", code="invalid_json")
    try:
        return json.loads(bytes(body), parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"The request body is not valid JSON: {e}", code="invalid_json") from None


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


class HostCheck:
    """ASGI middleware: answers only requests whose Host header names an allowed host (any port),
    so that a web page whose name a DNS-rebinding attacker points at 127.0.0.1 cannot read the
    answers (as Ollama does). A request without a Host header (HTTP/1.0) is not a browser's."""

    def __init__(self, app: Callable, allowed: frozenset[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host")
            name = host_name(header.decode("latin-1")) if header is not None else None
            if name is not None and name not in self.allowed:
                await error_response(host_not_allowed(name))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """A Host header's name, without the port and the brackets of an IPv6 address, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


class BearerAuth:
    """ASGI middleware: every path but OPEN_PATHS needs `Authorization: Bearer <api key>`."""

    def __init__(self, app: Callable, api_key: str):
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = dict(scope["headers"]).get(b"authorization")
            if not self._authorized(header):
                await error_response(invalid_api_key(header is not None))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authorized(self, header: Optional[bytes]) -> bool:
        if header is None:
            return False
        scheme, _, key = header.partition(b" ")
        # constant time: the comparison does not tell how much of a guess was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(), self._key)

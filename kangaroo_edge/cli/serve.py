"""`kangaroo-edge serve`: an OpenAI-compatible HTTP server (POST /v1/chat/completions,
/v1/completions; GET /v1/models, /health) with llama-server's own endpoints (POST /completion,
/tokenize, /detokenize, /apply-template; GET /props), as llama.cpp's llama-server.

The model is loaded once. Requests are taken in order: one alone is generated with Kangaroo's
speculation; several at once are decoded together, up to --parallel (server/worker.py). At most
--max-queue requests wait (503 with Retry-After beyond). Listens on loopback unless --host says otherwise;
with an API key (--api-key or $KANGAROO_EDGE_API_KEY) every path but /health needs
`Authorization: Bearer KEY`. Sampling defaults are llama.cpp's; a request's fields override them.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from .. import _native
from ..prompt_cache import DEFAULT_CACHE_RAM_MIB, PromptCache
from ..sampling_defaults import LLAMA_CPP_SAMPLING
from .common import (UserError, add_model_args, add_sampling_args, add_spec_args, float_in, int_at_least, load_model,
                     positive_int, sampling_from_args)

DEFAULT_HOST = "127.0.0.1"  # loopback: other machines cannot reach the server unless --host says so
DEFAULT_PORT = 8080  # llama-server's
API_KEY_ENV = "KANGAROO_EDGE_API_KEY"
DEFAULT_MAX_QUEUE = 32
DEFAULT_PARALLEL = 4  # llama-server's slots when -np is not given
MAX_PARALLEL = _native.MAX_BATCH_SEQUENCES
DEFAULT_MAX_REQUEST_BYTES = 4 << 20  # far above any prompt that fits a context
WORKER_STOP_SECONDS = 30  # at exit: how long to wait for the model's thread to finish a step
# llama-server's n_predict default is -1 (until the end of the answer or a full context): one
# request could then hold the model for minutes. mlx_lm.server caps at 512; a long answer fits 2048.
DEFAULT_N_PREDICT = 2048
N_PREDICT_UNLIMITED = -1
DEFAULT_TIMEOUT_S = 600.0  # llama-server's --timeout; here a generation's limit, after which it ends ("length")
DEFAULT_SSE_KEEPALIVE_S = 15.0  # well under the 60 s idle cut of common proxies (nginx's proxy_read_timeout)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # the Host names a loopback bind answers by default


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return value


port_number.__name__ = "port"


def n_predict(text: str) -> "int | None":
    """A positive token count, or -1 (llama.cpp's "no cap"): None."""
    if text.strip() == str(N_PREDICT_UNLIMITED):
        return None
    return positive_int(text)


n_predict.__name__ = "token count"


def cache_ram_mib(text: str) -> "int | None":
    """MiB of prompt cache: 0 off, -1 (llama-server's "no limit"): None."""
    if text.strip() == "-1":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected MiB >= 0 or -1 (no limit), got {text!r}")
    return value


cache_ram_mib.__name__ = "cache size"


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}, this machine only; 0.0.0.0 for all)")
    g.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"port to listen on, 0 = any free one (default {DEFAULT_PORT})")
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on every path but /health (default: ${API_KEY_ENV}, "
                        "else no key; the environment variable keeps the key out of the process list)")
    g.add_argument("--alias", default=None, metavar="NAME",
                   help="model name in /v1/models and responses (default: the GGUF file's name)")
    g.add_argument("--strict-model", action="store_true",
                   help="answer 404 to a request whose `model` is not the served name (default: any name gets "
                        "the loaded model, as llama-server)")
    g.add_argument("-np", "--parallel", type=int_at_least(1, f"an integer in [1, {MAX_PARALLEL}]", hi=MAX_PARALLEL), default=DEFAULT_PARALLEL,
                   help="requests decoded together at most when several arrive at once (plainly, one weight pass for "
                        "all; a request alone keeps speculation); each has the full context, so the KV cache grows "
                        f"by one context per slot. 1: one request at a time (default {DEFAULT_PARALLEL}, as "
                        "llama-server's)")
    g.add_argument("--max-queue", type=positive_int, default=DEFAULT_MAX_QUEUE,
                   help=f"requests that may wait for the model; beyond, 503 (default {DEFAULT_MAX_QUEUE})")
    g.add_argument("--max-request-bytes", type=positive_int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help=f"largest request body; beyond, 413 (default {DEFAULT_MAX_REQUEST_BYTES})")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; '*' for any). Default: no CORS")
    g.add_argument("-n", "--n-predict", type=n_predict, default=DEFAULT_N_PREDICT,
                   help=f"maximum new tokens when a request gives no max_tokens; -1 = until the end of the answer "
                        f"or a full context (default {DEFAULT_N_PREDICT})")
    g.add_argument("--timeout", type=float_in(0.0, 1e9, lo_open=True), default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="a request's generation ends after this long, with finish_reason 'length' (checked between "
                        f"steps; a prompt's evaluation is not cut). /health answers 503 'stuck' when one request "
                        f"runs past twice this (default {DEFAULT_TIMEOUT_S:g})")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="on a loopback address, also answer requests whose Host header names NAME (repeatable); "
                        "by default only localhost, 127.0.0.1 and [::1] (any port), so that a web page cannot "
                        "reach the server by DNS rebinding. Any Host is answered on a non-loopback --host")
    g.add_argument("--sse-keepalive", type=float_in(0.0, 3600.0, lo_open=True), default=DEFAULT_SSE_KEEPALIVE_S,
                   metavar="SECONDS",
                   help="a streamed response with nothing to send for this long (waiting in the queue, evaluating "
                        f"the prompt) sends a ': keep-alive' comment (default {DEFAULT_SSE_KEEPALIVE_S:g})")
    g.add_argument("--parse-special", action="store_true",
                   help="parse special-token text (e.g. <|im_start|>) in chat messages as special tokens (default: "
                        "a message's text stays text, so that a user cannot forge a role boundary)")
    g.add_argument("--cache-ram", type=cache_ram_mib, default=DEFAULT_CACHE_RAM_MIB, metavar="MiB",
                   help="keep other conversations' states in this much RAM, so that a conversation resumed after "
                        f"other requests evaluates only its new tokens (llama-server's; default {DEFAULT_CACHE_RAM_MIB}, "
                        "-1: no limit, 0: off)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="log verbosity (default info: one line per request)")
    add_model_args(p)
    add_sampling_args(p, defaults=LLAMA_CPP_SAMPLING)
    add_spec_args(p)


def main(args: argparse.Namespace) -> int:
    from ..server.app import ServerConfig, create_app  # imported here: `kangaroo-edge chat` needs no web stack
    from ..server.http_server import serve
    from ..server.validation import GenerationDefaults
    from ..server.worker import ModelWorker

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty")
    _setup_logging(args.log_level)
    log = logging.getLogger("kangaroo_edge.server")
    if not _is_loopback(args.host) and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the model "
                    "(--api-key or $%s)", args.host, API_KEY_ENV)
    lm = load_model(args)
    if args.cache_ram != 0:
        lm.set_cache(PromptCache(sys.maxsize if args.cache_ram is None else args.cache_ram << 20))
    model_id = args.alias or lm.model_path.name.removesuffix(".gguf")
    defaults = GenerationDefaults(sampling=sampling_from_args(args), max_tokens=args.n_predict,
                                  speculative=not args.no_spec, tau=args.tau, gamma=args.gamma, lookup=args.lookup)
    config = ServerConfig(model_id=model_id, defaults=defaults, api_key=api_key,
                          max_request_bytes=args.max_request_bytes, cors_origins=tuple(args.cors_origin),
                          strict_model=args.strict_model, allowed_hosts=allowed_hosts(args.host, args.allowed_host),
                          sse_keepalive_s=args.sse_keepalive, chat_template=args.chat_template)
    worker = ModelWorker(lm, args.max_queue, timeout_s=args.timeout, parse_special=args.parse_special,
                         parallel=args.parallel)
    if args.parallel > 1:
        log.info("up to %d requests decoded together: %.0f MiB of KV cache for them", args.parallel,
                 worker.batch_kv_bytes / 2**20)
    worker.start()
    try:
        serve(create_app(worker, config), worker, model_id, args.host, args.port, args.log_level)
    finally:
        if worker.close(WORKER_STOP_SECONDS):
            lm.close()
    print("kangaroo-edge serve: stopped", file=sys.stderr, flush=True)
    return 0


def allowed_hosts(host: str, extra: list[str]) -> "frozenset[str] | None":
    """The Host header names a server bound to `host` answers; None: any (a non-loopback bind is
    reached by names this process cannot know)."""
    if not _is_loopback(host):
        return None
    return frozenset(LOOPBACK_HOSTS) | {name.lower().rstrip(".") for name in extra}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))  # uvicorn's layout
    log = logging.getLogger("kangaroo_edge.server")
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False

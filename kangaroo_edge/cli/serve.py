"""`kangaroo-edge serve`: an OpenAI-compatible HTTP server (POST /v1/chat/completions,
/v1/completions; GET /v1/models, /health), as llama.cpp's llama-server.

The model is loaded once and serves one request at a time, in order; at most --max-queue
requests wait (503 with Retry-After beyond). Listens on loopback unless --host says otherwise;
with an API key (--api-key or $KANGAROO_EDGE_API_KEY) every path but /health needs
`Authorization: Bearer KEY`. Sampling defaults are llama.cpp's; a request's fields override them.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from ..sampling_defaults import LLAMA_CPP_SAMPLING
from .common import UserError, add_model_args, add_sampling_args, add_spec_args, load_model, positive_int, sampling_from_args

DEFAULT_HOST = "127.0.0.1"  # loopback: other machines cannot reach the server unless --host says so
DEFAULT_PORT = 8080  # llama-server's
API_KEY_ENV = "KANGAROO_EDGE_API_KEY"
DEFAULT_MAX_QUEUE = 32
DEFAULT_MAX_REQUEST_BYTES = 4 << 20  # far above any prompt that fits a context
WORKER_STOP_SECONDS = 30  # at exit: how long to wait for the model's thread to finish a step


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return value


port_number.__name__ = "port"


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
    g.add_argument("--max-queue", type=positive_int, default=DEFAULT_MAX_QUEUE,
                   help=f"requests that may wait for the model; beyond, 503 (default {DEFAULT_MAX_QUEUE})")
    g.add_argument("--max-request-bytes", type=positive_int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help=f"largest request body; beyond, 413 (default {DEFAULT_MAX_REQUEST_BYTES})")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; '*' for any). Default: no CORS")
    g.add_argument("-n", "--n-predict", type=positive_int, default=None,
                   help="maximum new tokens when a request gives no max_tokens (default: until the end of "
                        "the answer or a full context)")
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
    model_id = args.alias or lm.model_path.name.removesuffix(".gguf")
    defaults = GenerationDefaults(sampling=sampling_from_args(args), max_tokens=args.n_predict,
                                  speculative=not args.no_spec, tau=args.tau, gamma=args.gamma, lookup=args.lookup)
    config = ServerConfig(model_id=model_id, defaults=defaults, api_key=api_key,
                          max_request_bytes=args.max_request_bytes, cors_origins=tuple(args.cors_origin),
                          strict_model=args.strict_model)
    worker = ModelWorker(lm, args.max_queue)
    worker.start()
    try:
        serve(create_app(worker, config), worker, model_id, args.host, args.port, args.log_level)
    finally:
        if worker.close(WORKER_STOP_SECONDS):
            lm.close()
    print("kangaroo-edge serve: stopped", file=sys.stderr, flush=True)
    return 0


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

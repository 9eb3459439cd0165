"""Flags shared by the subcommands, named as llama.cpp names them."""

from __future__ import annotations

import argparse

from ..llm import DEFAULT_N_CTX, KangarooLM
from ..types import SamplingParams

DEFAULT_THREADS = None  # physical cores


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", default=None,
                   help="GGUF model path or a known name (smollm2-135m, qwen2.5-coder-0.5b); default: the embedded SmolLM2-135M-Instruct")
    g.add_argument("-c", "--ctx-size", type=int, default=DEFAULT_N_CTX, help=f"context size in tokens (default {DEFAULT_N_CTX})")
    g.add_argument("-t", "--threads", type=int, default=DEFAULT_THREADS, help="CPU threads (default: physical cores)")
    g.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto", help="compute device (default auto)")


def add_sampling_args(p: argparse.ArgumentParser, default_temp: float = 0.0) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=default_temp, help=f"temperature; 0 = greedy (default {default_temp})")
    g.add_argument("--top-k", type=int, default=0, help="top-k filter, 0 = off (default 0)")
    g.add_argument("--top-p", type=float, default=1.0, help="top-p (nucleus) filter, 1 = off (default 1.0)")
    g.add_argument("--min-p", type=float, default=0.0, help="min-p filter, 0 = off (default 0.0)")
    g.add_argument("-s", "--seed", type=int, default=None, help="random seed (default: random)")


def load_model(args: argparse.Namespace) -> KangarooLM:
    return KangarooLM(model_path=args.model, n_ctx=args.ctx_size, n_threads=args.threads, device=args.device)


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=args.seed)

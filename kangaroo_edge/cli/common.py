"""Flags shared by the subcommands, named as llama.cpp names them, and the one-line error policy."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional

from ..llm import DEFAULT_N_CTX, KangarooLM
from ..types import SamplingParams

DEFAULT_THREADS = None  # physical cores


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (`prog: error: ...`), exit code 2,
    instead of the usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- value checkers for `type=`: argparse turns their ValueError/ArgumentTypeError into one line

def int_at_least(lo: int, expected: str, name: str = "integer", hi: Optional[int] = None):
    """An integer >= lo (and <= hi); `expected` says so in the error."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    check.__name__ = name
    return check


positive_int = int_at_least(1, "a positive integer", "positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def float_in(lo: float, hi: float, lo_open: bool = False):
    """A float in [lo, hi] (or (lo, hi] with lo_open)."""
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (value > lo if lo_open else value >= lo) and value <= hi
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {text!r}")
        return value
    check.__name__ = "number"
    return check



# ---- flag groups -------------------------------------------------------------------------

def add_model_args(p: argparse.ArgumentParser, default_threads: Optional[int] = DEFAULT_THREADS) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", default=None,
                   help="GGUF model path or a known name (smollm2-135m, qwen2.5-coder-0.5b, gemma-3-270m); "
                        "default: the embedded SmolLM2-135M-Instruct")
    g.add_argument("--adapter", default=None, metavar="GGUF",
                   help="Kangaroo adapter GGUF for the model (default: the shipped one when -m is omitted or a "
                        "known name; none for a model given by path)")
    g.add_argument("-c", "--ctx-size", type=positive_int, default=DEFAULT_N_CTX,
                   help=f"context size in tokens (default {DEFAULT_N_CTX})")
    threads_default = "physical cores" if default_threads is None else str(default_threads)
    g.add_argument("-t", "--threads", type=positive_int, default=default_threads,
                   help=f"CPU threads (default: {threads_default})")
    g.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="compute device: auto = a GPU when llama.cpp was built with one (default auto)")
    g.add_argument("--chat-template", default=None, metavar="NAME|JINJA",
                   help="chat template for chat prompts: a llama.cpp built-in name (gemma, chatml, llama3, ...) "
                        "or a Jinja source (default: the model's own; required for a model that has none)")


def add_sampling_args(p: argparse.ArgumentParser, defaults: SamplingParams = SamplingParams()) -> None:
    """Sampling flags; `defaults` (greedy unless given) are the values when a flag is left out."""
    d = defaults
    g = p.add_argument_group("sampling")  # their ranges are the engine's: sampling_from_args reports them
    g.add_argument("--temp", type=float, default=d.temperature,
                   help=f"temperature; 0 = greedy (default {d.temperature})")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"top-k filter, 0 = off (default {d.top_k})")
    g.add_argument("--top-p", type=float, default=d.top_p,
                   help=f"top-p (nucleus) filter, 1 = off (default {d.top_p})")
    g.add_argument("--min-p", type=float, default=d.min_p, help=f"min-p filter, 0 = off (default {d.min_p})")
    g.add_argument("-s", "--seed", type=non_negative_int, default=d.seed, help="random seed (default: random)")
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty,
                   help=f"penalize repeats of the last --repeat-last-n output tokens, 1 = off (default {d.repeat_penalty})")
    g.add_argument("--repeat-last-n", type=int, default=d.repeat_last_n,
                   help=f"output tokens the penalties look back on, 0 = off, -1 = all (default {d.repeat_last_n})")
    g.add_argument("--presence-penalty", type=float, default=d.presence_penalty,
                   help=f"subtracted from a repeated token's logit once, 0 = off (default {d.presence_penalty})")
    g.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty,
                   help=f"subtracted per repetition, 0 = off (default {d.frequency_penalty})")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculation (Kangaroo; used when an adapter is loaded)")
    g.add_argument("--no-spec", action="store_true", help="plain decoding even when an adapter is loaded")
    g.add_argument("--tau", type=float_in(0.0, 1.0), default=None,
                   help="a fixed threshold: stop drafting when the draft's top-1 probability falls below it "
                        "(default: auto, a controller that measures what drafts cost and earn on this "
                        "machine and drafts only when it pays)")
    g.add_argument("--gamma", type=positive_int, default=None,
                   help="maximum drafted tokens per cycle (default: the adapter's)")
    g.add_argument("--lookup", action=argparse.BooleanOptionalAction, default=None,
                   help="also draft by prompt lookup: what followed an earlier occurrence of the latest "
                        "tokens (default: on with the auto controller, off with a fixed --tau)")


def load_model(args: argparse.Namespace) -> KangarooLM:
    return KangarooLM(model_path=args.model, adapter_path=getattr(args, "adapter", None),
                      n_ctx=args.ctx_size, n_threads=args.threads, device=args.device,
                      chat_template=getattr(args, "chat_template", None))


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=args.seed,
                          repeat_penalty=args.repeat_penalty, frequency_penalty=args.frequency_penalty,
                          presence_penalty=args.presence_penalty, repeat_last_n=args.repeat_last_n)


# ---- output ------------------------------------------------------------------------------

def format_stats(timings: dict) -> str:
    """One line from a generation's `timings` (openai_shapes.timings): tokens, tokens/s, the
    prompt's evaluation, and (when speculating) mean accepted tokens per verification."""
    t = timings
    parts = [f"{t['predicted_n']} tokens", f"{t['predicted_per_second']:.1f} tokens/s",
             f"prompt {t['prompt_n']} tokens at {t['prompt_per_second']:.0f} tokens/s"]
    if t["speculative"]:
        parts.append(speculation_summary(t))
    line = ", ".join(parts)
    if t.get("speculative_fallback"):
        line += f"; {t['speculative_fallback']}"
    return f"[{line}]"


def speculation_summary(timings: dict) -> str:
    """Mean tokens per verification, or why there was no verification to average over: the
    controller (tau "auto") keeps speculation off where it measures that drafting would not pay."""
    if timings["cycles"]:
        return f"{timings['mean_accepted']:.2f} tokens per verification"
    if timings["tau"] == "auto":
        return "speculation stayed off (the controller expected no gain from drafting)"
    return "speculation stayed off (no drafting cycle ran)"


def dim(text: str, stream=None) -> str:
    """ANSI dim when the stream is a terminal, plain text otherwise."""
    stream = stream or sys.stdout
    return f"\033[2m{text}\033[0m" if stream.isatty() else text

"""`kangaroo-edge chat`: a conversation in the terminal.

Each turn re-renders the whole conversation with the model's chat template; the engine reuses
the KV cache for the longest common token prefix, so only the new part is evaluated.

On a terminal: readline line editing and history, slash commands, Ctrl-C stops an answer (the
partial answer stays in the conversation), Ctrl-D exits. With stdin not a terminal: one question
per line, answers on stdout, no prompt decoration, exit at end of input. The speed line after
each answer goes to stdout when stdout is a terminal (dimmed), otherwise to stderr, so that
redirected output holds only the answers.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ..openai_shapes import timings
from .common import (add_model_args, add_sampling_args, add_spec_args, dim, format_stats, load_model,
                     positive_int, sampling_from_args)
from ..sampling_defaults import LLAMA_CPP_SAMPLING

DEFAULT_N_PREDICT = 512  # per answer
PROMPT = "> "
HISTORY_FILE = "chat_history"  # under the kangaroo-edge cache directory
HISTORY_LENGTH = 1000

HELP = """commands:
  /reset             forget the conversation (the system prompt stays)
  /stats             statistics of the last answer and context use
  /set temp X        temperature (0 = greedy); also: top_p X, top_k N, min_p X, seed N, max N (tokens per answer),
                     repeat_penalty X, repeat_last_n N, presence_penalty X, frequency_penalty X
  /help              this text
  /exit              quit (or Ctrl-D)
Ctrl-C stops an answer; the partial answer stays in the conversation."""

# /set NAME -> the session attribute it sets
SETTINGS = {
    "temp": "temperature", "temperature": "temperature",
    "top_p": "top_p", "top-p": "top_p",
    "top_k": "top_k", "top-k": "top_k",
    "min_p": "min_p", "min-p": "min_p",
    "seed": "seed",
    "repeat_penalty": "repeat_penalty", "repeat-penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n", "repeat-last-n": "repeat_last_n",
    "presence_penalty": "presence_penalty", "presence-penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "frequency-penalty": "frequency_penalty",
    "max": "max_tokens", "max_tokens": "max_tokens", "n": "max_tokens", "n_predict": "max_tokens",
}


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--n-predict", type=positive_int, default=DEFAULT_N_PREDICT,
                   help=f"maximum new tokens per answer (default {DEFAULT_N_PREDICT})")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="system prompt (default: the chat template's own, if any)")
    p.add_argument("--no-history", action="store_true",
                   help="do not read or write the input history file (~/.cache/kangaroo-edge/chat_history)")
    add_model_args(p)
    add_sampling_args(p, defaults=LLAMA_CPP_SAMPLING)
    add_spec_args(p)


class _StopFlag:
    """SIGINT handler for the duration of an answer: Ctrl-C sets a flag that the streaming loop
    checks between chunks, so the engine is never interrupted half-way through a step."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        self.set = False
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


class ChatSession:
    def __init__(self, lm: Any, args: argparse.Namespace, interactive: bool):
        self.lm = lm
        self.interactive = interactive
        self.system = args.system
        self.sampling = sampling_from_args(args)
        self.max_tokens: int = args.n_predict
        self.speculative = not args.no_spec
        self.tau, self.gamma, self.lookup = args.tau, args.gamma, args.lookup
        self.messages: list[dict[str, str]] = []
        self.last_stats: Optional[dict] = None
        self.reset()

    # ---- conversation ------------------------------------------------------------------

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.last_stats = None

    def answer(self, question: str) -> None:
        """Streams the answer to stdout and adds both turns to the conversation."""
        self.messages.append({"role": "user", "content": question})
        try:
            prompt = self.lm.apply_chat_template(self.messages)
            chunks = self.lm.generate(prompt, self.max_tokens, sampling=self.sampling, stream=True,
                                      speculative=self.speculative, tau=self.tau, gamma=self.gamma,
                                      lookup=self.lookup)
        except ValueError as e:  # e.g. the conversation no longer fits the context
            self.messages.pop()
            self._error(f"{e} (use /reset to start over)")
            return
        parts: list[str] = []
        n_tokens, stats = 0, None
        with _StopFlag() as stop:
            try:
                for chunk in chunks:
                    parts.append(chunk.text)
                    n_tokens += len(chunk.token_ids)
                    _write(chunk.text)
                    if chunk.stats is not None:
                        stats, draft = chunk.stats, chunk.draft
                    if stop.set:
                        break
            finally:
                chunks.close()  # releases the model; the KV cache keeps what was generated
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        _write("\n")
        if stats is None:
            self._note(f"[interrupted after {n_tokens} tokens]")
        else:
            self.last_stats = timings(stats, draft)
            self._note(format_stats(self.last_stats))

    # ---- slash commands ----------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Runs a /command; returns False when the chat should end."""
        name, _, rest = line[1:].strip().partition(" ")
        name = name.lower()
        if name in ("exit", "quit", "bye"):
            return False
        if name == "reset":
            self.reset()
            self._info("(conversation cleared)")
        elif name == "stats":
            self._info(self.stats_text())
        elif name == "set":
            self.set_option(rest.split())
        elif name in ("help", "?"):
            self._info(HELP)
        else:
            self._error(f"unknown command /{name}; /help lists the commands")
        return True

    def set_option(self, words: list[str]) -> None:
        if len(words) != 2 or words[0].lower() not in SETTINGS:
            self._error("usage: /set temp|top_p|top_k|min_p|seed|max|repeat_penalty|repeat_last_n|presence_penalty|"
                        "frequency_penalty VALUE")
            return
        attr, text = SETTINGS[words[0].lower()], words[1]
        try:
            if attr == "max_tokens":
                value = int(text)
                if value < 1:
                    raise ValueError(f"max must be a positive integer, got {text!r}")
                self.max_tokens = value
            else:
                value = int(text) if attr in ("top_k", "seed", "repeat_last_n") else float(text)
                self.sampling = replace(self.sampling, **{attr: value})  # validated by SamplingParams
        except ValueError as e:
            msg = str(e)
            self._error(msg if "must" in msg else f"{words[0]}: not a valid value: {text!r}")
            return
        self._info(f"({words[0]} = {value})")

    def stats_text(self) -> str:
        s = self.sampling
        lines = [f"conversation: {len(self.messages)} messages, {self.lm.n_tokens} of {self.lm.n_ctx} "
                 "context tokens in use",
                 f"settings: temp {s.temperature}, top_k {s.top_k}, top_p {s.top_p}, min_p {s.min_p}, "
                 f"seed {s.seed}, repeat_penalty {s.repeat_penalty} (last {s.repeat_last_n}), "
                 f"presence_penalty {s.presence_penalty}, frequency_penalty {s.frequency_penalty}, "
                 f"max {self.max_tokens} tokens per answer, "
                 f"speculative {'on' if self.speculative else 'off'}"]
        if self.last_stats is None:
            lines.append("last answer: none (or interrupted)")
        else:
            lines.append("last answer:")
            for k, v in self.last_stats.items():
                lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
        return "\n".join(lines)

    # ---- output ------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        """The speed line: dim on a terminal; to stderr when stdout is not a terminal."""
        if sys.stdout.isatty():
            print(dim(text), flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def _info(self, text: str) -> None:
        print(text, flush=True)

    def _error(self, text: str) -> None:
        print(f"error: {text}", file=sys.stderr, flush=True)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ---- input -------------------------------------------------------------------------------

def _setup_readline(use_history: bool) -> Optional[Path]:
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return None
    if not use_history:
        return None
    from ..models import default_cache_dir

    path = default_cache_dir() / HISTORY_FILE
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(HISTORY_LENGTH)
    return path


def _save_history(path: Optional[Path]) -> None:
    if path is None:
        return
    import readline

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass  # history is a convenience: never fail the chat over it


def _read_line(interactive: bool) -> Optional[str]:
    """The next input line; None at end of input. On a terminal Ctrl-C abandons the line being
    typed and asks again (as Python's REPL does); in a pipe it ends the chat."""
    if not interactive:
        line = sys.stdin.readline()
        return None if not line else line.rstrip("\n")
    while True:
        try:
            return input(PROMPT)
        except EOFError:
            print()
            return None
        except KeyboardInterrupt:
            print("\n" + dim("(Ctrl-D or /exit to quit)"), flush=True)


def main(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    lm = load_model(args)
    session = ChatSession(lm, args, interactive)
    history = _setup_readline(interactive and not args.no_history) if interactive else None
    if interactive:
        info = lm.info()
        adapter = "" if not info.get("adapter_path") else f", adapter {Path(info['adapter_path']).name}"
        print(dim(f"{Path(info['model_path']).name}{adapter}, {info['backend']}; /help for commands, Ctrl-D to quit"),
              flush=True)
    try:
        while True:
            line = _read_line(interactive)
            if line is None:
                break
            if not line.strip():
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            session.answer(line)
    finally:
        _save_history(history)
    return 0


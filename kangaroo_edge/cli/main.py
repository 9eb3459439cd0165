"""`kangaroo-edge <command>`: dispatches to one module per subcommand.

Only the chosen subcommand's module is imported, so `chat` does not pay for `train`'s torch import.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from .common import ArgumentParser, UserError

# subcommand -> one-line help; the module kangaroo_edge.cli.<name> has setup_arg_parser(parser) and main(args)
COMMANDS = {
    "chat": "Chat with a model in the terminal (streamed, keeps the conversation).",
    "generate": "Generate text from one prompt (streamed).",
    "serve": "Serve the model over an OpenAI-compatible HTTP API (as llama.cpp's llama-server).",
    "info": "Describe a model (and adapter): architecture, quantization, size, fingerprint, backend.",
    "bench": "Spec-Bench-style speed benchmark against llama.cpp on the same GGUF.",
    "train": "Train a Kangaroo adapter for a model.",
    "convert": "Convert models and adapters to GGUF.",
}


def build_parser(command: Optional[str] = None) -> ArgumentParser:
    """The parser; the flags of `command` (when given) are set up from its module."""
    parser = ArgumentParser(prog="kangaroo-edge",
                            description="Fast local LLM inference with Kangaroo self-speculative decoding.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"kangaroo_edge.cli.{name}")
            module.setup_arg_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    prog = f"kangaroo-edge {args.command}"
    try:
        return args._module.main(args) or 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    """Errors about the user's inputs (flags, files, models) rather than bugs: missing or
    unreadable files, invalid values, and the engine's own load/validation errors."""
    if isinstance(e, (UserError, OSError, ValueError)):
        return True
    native = sys.modules.get("kangaroo_edge._native")
    return native is not None and isinstance(e, native.EngineError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())

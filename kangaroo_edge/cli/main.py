"""`kangaroo-edge <command>`: dispatches to one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .common import UserError

# subcommand -> module under kangaroo_edge.cli; each has setup_arg_parser(parser) and main(args)
COMMANDS = {
    "generate": "Generate text from one prompt (streamed).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kangaroo-edge",
                                     description="Fast local LLM inference with Kangaroo self-speculative decoding.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"kangaroo_edge.cli.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.setup_arg_parser(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._module.main(args) or 0
    except (UserError, FileNotFoundError, ValueError) as e:
        print(f"kangaroo-edge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

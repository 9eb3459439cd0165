"""`kangaroo-edge bench`: Spec-Bench-style speed benchmark, our decoding against llama.cpp's.

The work is in kangaroo_edge.bench (runner: systems and loop; report: tables and chart).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import UserError, float_in, non_negative_int, positive_int

DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_THREADS = 2  # explicit and equal on every side, for reproducible numbers


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    from ..bench.runner import default_questions_path

    default_q = default_questions_path()
    p.add_argument("--questions", default=str(default_q) if default_q else None, metavar="JSONL",
                   help="Spec-Bench question file (question_id, category, turns); "
                        f"default: {default_q or '../shared/specbench/dev.jsonl (not found here: required)'}")
    p.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"new tokens per answer (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="at most this many questions, taken round-robin over the categories (default: all)")
    p.add_argument("--categories", default=None, metavar="A,B",
                   help="comma-separated categories to run (default: all)")
    p.add_argument("-m", "--model", default=None,
                   help="GGUF model path or a known name; default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--adapter", default=None, metavar="GGUF",
                   help="Kangaroo adapter for 'ours Kangaroo' (without one it falls back to plain decoding)")
    p.add_argument("-t", "--threads", type=positive_int, default=DEFAULT_THREADS,
                   help=f"threads for every system (default {DEFAULT_THREADS})")
    p.add_argument("-c", "--ctx-size", type=non_negative_int, default=0,
                   help="context size; 0 = the longest prompt + max new tokens (default 0)")
    p.add_argument("--device", choices=["cpu", "auto", "gpu"], default="cpu",
                   help="our engine's device; llama.cpp runs on CPU (default cpu)")
    p.add_argument("--systems", default=None, metavar="A,B",
                   help="systems to run (default: all): llamacpp_plain, llamacpp_pld, ours_plain, ours_kangaroo")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE",
                   help="write every per-question measurement, the summary, config and machine info as JSON")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the summary table as Markdown (it is also printed)")
    p.add_argument("--chart", default=None, metavar="FILE", help="write a PNG chart of the speedup per category")
    p.add_argument("--tau", type=float_in(0.0, 1.0), default=None,
                   help="Kangaroo with a fixed confidence threshold (the paper's rule) instead of the "
                        "speculation controller (default: the controller)")
    p.add_argument("--gamma", type=positive_int, default=None, help="Kangaroo: most drafts per cycle (default: the adapter's)")
    p.add_argument("--lookup", action=argparse.BooleanOptionalAction, default=None,
                   help="Kangaroo: also draft by prompt lookup (default: with the speculation controller, "
                        "not with a fixed --tau)")
    p.add_argument("--tune", action="store_true",
                   help="after the run, time plain steps and verifications of every draft length 1..gamma, and "
                        "print what the speculation controller measured on this machine (step costs against "
                        "ours and llama.cpp's, draft accuracy) and the settings it implies")
    p.add_argument("--completion", action="store_true",
                   help="questions as raw text to continue instead of chat prompts (for a model without a chat "
                        "template, such as the pretrained Gemma 3 270M)")
    p.add_argument("--chat-template", default=None, metavar="NAME|JINJA",
                   help="chat template for the prompts: a llama.cpp built-in name or a Jinja source "
                        "(default: the model's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def main(args: argparse.Namespace) -> int:
    from ..bench import report, runner

    if not args.questions:
        raise UserError("no question file: give --questions FILE.jsonl")
    if not Path(args.questions).is_file():
        raise UserError(f"question file not found: {args.questions}")
    if args.adapter and not Path(args.adapter).is_file():
        raise UserError(f"adapter file not found: {args.adapter}")
    systems = tuple(_split(args.systems) or runner.SYSTEMS)
    unknown = [s for s in systems if s not in runner.SYSTEMS]
    if unknown:
        raise UserError(f"unknown systems {unknown}; choose from {', '.join(runner.SYSTEMS)}")
    if args.chart:
        try:
            import matplotlib  # noqa: F401  (fail now, not after the run)
        except ImportError:
            raise UserError("--chart needs matplotlib: pip install matplotlib") from None

    cfg = runner.BenchConfig(questions=args.questions, model=args.model, adapter=args.adapter, threads=args.threads,
                             max_new_tokens=args.max_new_tokens, limit=args.limit, categories=_split(args.categories),
                             n_ctx=args.ctx_size or None, device=args.device, systems=systems,
                             tune=args.tune, tau=args.tau, gamma=args.gamma, lookup=args.lookup,
                             prompt_format="completion" if args.completion else "chat",
                             chat_template=args.chat_template)
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(it):
            return tqdm(it, desc="questions", unit="q", file=sys.stderr)

    result = runner.run_bench(cfg, progress)
    try:
        result["summary"] = report.summarize(result)
    finally:  # the measurements are kept even if a summary cannot be made of them
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(result, indent=1))
    table = report.markdown(result)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.chart:
        report.chart(result, args.chart)
    if args.tune:
        print(report.cost_model_text(result.get("cost_model")))
    return 0

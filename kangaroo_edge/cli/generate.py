"""`kangaroo-edge generate`: one prompt, streamed to stdout, with a speed line on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from ..openai_shapes import timings
from .common import (UserError, add_model_args, add_sampling_args, add_spec_args, format_stats, load_model,
                     positive_int, sampling_from_args)

DEFAULT_N_PREDICT = 256


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--prompt", default=None, help="the prompt (default: read from stdin)")
    p.add_argument("-n", "--n-predict", type=positive_int, default=DEFAULT_N_PREDICT,
                   help=f"maximum new tokens (default {DEFAULT_N_PREDICT})")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user message")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, token_ids, finish_reason, stats)")
    add_model_args(p)
    add_sampling_args(p)
    add_spec_args(p)


def main(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    if not prompt:
        raise UserError("empty prompt: give -p TEXT or pipe text on stdin")
    lm = load_model(args)
    if args.chat:
        prompt = lm.apply_chat_template([{"role": "user", "content": prompt}])
    kwargs = dict(sampling=sampling_from_args(args), stop=args.stop, speculative=not args.no_spec,
                  tau=args.tau, gamma=args.gamma, lookup=args.lookup)
    if args.json:
        r = lm.generate(prompt, args.n_predict, **kwargs)
        print(json.dumps({"text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason,
                          "timings": timings(r.stats, r.draft)}))
        return 0
    for chunk in lm.generate(prompt, args.n_predict, stream=True, **kwargs):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()  # the answer's last line before the speed line on a shared terminal
    print(format_stats(timings(chunk.stats, chunk.draft)), file=sys.stderr)
    return 0

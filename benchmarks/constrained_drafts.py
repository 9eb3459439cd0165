"""Drafts under a constraint: tokens per verification and tokens/s with the drafts masked by the
grammar (the default) and unmasked (the constraint on the output only, as before drafts were
masked), against constrained plain decoding.

The JSON schema and prompts of tests/test_constraints.py, greedy. Each configuration runs every
prompt on a freshly loaded model (the speculation controller and the drafters' calibration learn
from earlier generations, which must not carry over from another configuration), and the outputs
are asserted identical (the constraint is lossless either way). Tokens per verification is summed
over the prompts (cycle tokens / cycles); tokens/s is the median over the prompts.

    python benchmarks/constrained_drafts.py -t 1 --prompts 6 --max-new-tokens 160
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

from kangaroo_edge import KangarooLM
from kangaroo_edge.constraints import Grammar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import load_questions  # noqa: E402
from test_constraints import SCHEMA, OutputOnly, json_prompt  # noqa: E402

# name -> (generate() keyword arguments, drafts masked; None: no constraint at all)
SYSTEMS: dict[str, tuple[dict, Optional[bool]]] = {
    "controller, no constraint": (dict(), None),
    "plain": (dict(speculative=False), True),
    "controller, drafts unmasked": (dict(), False),
    "controller, drafts masked": (dict(), True),
    "tau=0.6 gamma=6 (the paper's rule), drafts unmasked": (dict(tau=0.6, gamma=6), False),
    "tau=0.6 gamma=6 (the paper's rule), drafts masked": (dict(tau=0.6, gamma=6), True),
    "forced tau=0 gamma=4, drafts unmasked": (dict(tau=0.0, gamma=4), False),
    "forced tau=0 gamma=4, drafts masked": (dict(tau=0.0, gamma=4), True),
}


def generate(lm: KangarooLM, prompt: str, n_new: int, masked_drafts: Optional[bool], **kwargs: Any):
    if masked_drafts is None:
        return lm.generate(prompt, n_new, lookup=False, **kwargs)
    if not masked_drafts:
        lm.grammar_mask = lambda g: OutputOnly(KangarooLM.grammar_mask(lm, g))
    try:
        return lm.generate(prompt, n_new, grammar=Grammar.json_schema(SCHEMA), lookup=False, **kwargs)
    finally:
        lm.__dict__.pop("grammar_mask", None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=160)
    args = p.parse_args()

    speeds: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    cycles = {name: 0 for name in SYSTEMS}
    cycle_tokens = {name: 0 for name in SYSTEMS}
    drafted = {name: 0 for name in SYSTEMS}
    accepted = {name: 0 for name in SYSTEMS}
    outputs: dict[str, list[list[int]]] = {}
    for name, (kwargs, masked) in SYSTEMS.items():
        lm = KangarooLM(n_threads=args.threads)
        outputs[name] = []
        for q in load_questions(args.prompts):
            lm.reset()
            r = generate(lm, json_prompt(lm, q), args.max_new_tokens, masked, **kwargs)
            outputs[name].append(r.token_ids)
            speeds[name].append(r.stats.predicted_per_second)
            cycles[name] += r.stats.cycles
            cycle_tokens[name] += r.stats.cycle_tokens
            drafted[name] += r.stats.draft_n
            accepted[name] += r.stats.draft_n_accepted
        if masked is not None and name != "plain":
            assert outputs[name] == outputs["plain"], f"{name}: constrained outputs differ from plain decoding"

    print("| decoding | tokens/s (median) | tokens/verification | drafts accepted | cycles |")
    print("|---|---|---|---|---|")
    for name in SYSTEMS:
        tpv = f"{cycle_tokens[name] / cycles[name]:.2f}" if cycles[name] else "-"
        acc = f"{accepted[name]}/{drafted[name]}" if drafted[name] else "-"
        print(f"| {name} | {statistics.median(speeds[name]):.1f} | {tpv} | {acc} | {cycles[name]} |")


if __name__ == "__main__":
    main()

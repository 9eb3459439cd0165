"""Kangaroo with untrained adapters against plain decoding, same process, same prompts.

Until a trained adapter ships this measures the machinery, not the method: an adapter made from
the exit layer's own attention block drafts badly at a shallow exit (mostly rejections) and well
at an exit just below the last layer (but then drafting costs almost a full forward pass).

    python benchmarks/kangaroo_untrained.py -t 2 --prompts 8 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.train.init_adapter import write_initial_adapter

SETTINGS = [(0.6, 6), (0.0, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--questions", default=default_questions_path(), type=Path,
                   help="Spec-Bench JSONL (default: the benchmark's, ../shared/specbench/dev.jsonl of a checkout)")
    args = p.parse_args()
    if args.questions is None:
        p.error("no question file found: give --questions FILE.jsonl")

    lm = KangarooLM(None, n_ctx=2048, n_threads=args.threads)
    questions = load_questions(args.questions, limit=args.prompts)
    prompts = [lm.apply_chat_template([{"role": "user", "content": q["turns"][0]}]) for q in questions]
    tmp = Path(tempfile.mkdtemp())
    exits = {"exit 2": 2, f"exit {lm.engine.n_layer - 1}": lm.engine.n_layer - 1}
    rows = []
    for name, layer in exits.items():
        lm.load_adapter(write_initial_adapter(lm, tmp / f"{layer}.gguf", layer))
        for tau, gamma in SETTINGS:
            ratios, accepted, same = [], [], 0
            for prompt in prompts:
                lm.reset()
                plain = lm.generate(prompt, args.max_new_tokens, speculative=False)
                lm.reset()
                spec = lm.generate(prompt, args.max_new_tokens, tau=tau, gamma=gamma)
                ratios.append(spec.stats.predicted_per_second / plain.stats.predicted_per_second)
                accepted.append(spec.stats.mean_accepted or 0.0)
                same += spec.token_ids == plain.token_ids
            rows.append({"adapter": name, "tau": tau, "gamma": gamma, "speed_vs_plain": statistics.median(ratios),
                         "mean_accepted": statistics.mean(accepted), "identical": f"{same}/{len(prompts)}"})
            print(json.dumps(rows[-1]))
    print("\n| adapter (untrained) | tau | gamma | Kangaroo / plain tok/s (median) | tokens per verification | identical |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['adapter']} | {r['tau']} | {r['gamma']} | {r['speed_vs_plain']:.2f}x | {r['mean_accepted']:.2f} | {r['identical']} |")


if __name__ == "__main__":
    main()

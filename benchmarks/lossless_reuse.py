"""Greedy Kangaroo equals plain decoding after a reused prefix, on the Spec-Bench dev questions.

Per question: a fresh plain call leaves the prompt cached; the second plain call (reusing the
cached prefix) is the reference; then Kangaroo with drafting forced (tau=0, gamma 1, 4, 8) and
plain again alternate on the same cached prefix, each compared token for token with the
reference. Prints identical counts per setting and per category, how often the reference equals
the fresh run, and the CPU.

    python benchmarks/lossless_reuse.py -m smollm2-135m --max-new-tokens 64 -t 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench.runner import default_questions_path, load_questions, machine_info

GAMMAS = (1, 4, 8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None, help="model path or known name (default: the embedded model)")
    p.add_argument("--questions", default=default_questions_path(), help="Spec-Bench JSONL (default: ../shared/specbench/dev.jsonl of a checkout)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the per-question results here")
    args = p.parse_args()
    if not args.questions:
        p.error("no question file found: give --questions ../shared/specbench/dev.jsonl")

    lm = KangarooLM(args.model, n_ctx=4096, n_threads=args.threads, device="cpu")
    questions = load_questions(Path(args.questions), None, args.limit)
    settings = [f"gamma={g}" for g in GAMMAS] + ["plain again"]
    same = defaultdict(int)
    by_cat = defaultdict(lambda: [0, 0])
    rows = []
    t0 = time.time()
    for i, q in enumerate(questions):
        prompt = lm.apply_chat_template([{"role": "user", "content": q["turns"][0]}])
        lm.reset()
        fresh = lm.generate(prompt, args.max_new_tokens, speculative=False).token_ids
        want = lm.generate(prompt, args.max_new_tokens, speculative=False).token_ids
        same["plain reused == fresh"] += want == fresh
        ok = {}
        for g in GAMMAS:
            ok[f"gamma={g}"] = lm.generate(prompt, args.max_new_tokens, tau=0.0, gamma=g, lookup=False).token_ids == want
            ok["plain again"] = lm.generate(prompt, args.max_new_tokens, speculative=False).token_ids == want
        for k, v in ok.items():
            same[k] += v
        by_cat[q["category"]][0] += all(ok.values())
        by_cat[q["category"]][1] += 1
        rows.append({"question_id": q.get("question_id"), "category": q["category"], **ok})
        print(f"\r{i + 1}/{len(questions)} questions, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    n = len(questions)
    info = machine_info()
    print(f"model {lm.model_path.name}, adapter {lm.adapter_path.name if lm.adapter_path else None}, "
          f"{args.max_new_tokens} new tokens, {args.threads} threads, CPU {info['cpu']}")
    print("| setting | identical to plain (reused prefix) |\n|---|---|")
    for s in settings:
        print(f"| {s} | {same[s]}/{n} |")
    print(f"| (plain on the cached prefix vs a fresh run) | {same['plain reused == fresh']}/{n} |")
    print("| **all settings, per category** | " + ", ".join(f"{c} {a}/{b}" for c, (a, b) in sorted(by_cat.items()))
          + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return 0 if all(same[s] == n for s in settings) else 1


if __name__ == "__main__":
    sys.exit(main())

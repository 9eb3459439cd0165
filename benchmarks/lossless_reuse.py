"""Greedy Kangaroo equals plain decoding after a reused prefix, on the Spec-Bench dev questions.

Per question: a fresh plain call leaves the prompt cached; the second plain call (reusing the
cached prefix) is the reference; then Kangaroo with drafting forced (tau=0, gamma 1, 4, 8), one
after the other on the same cached prefix, and plain decoding again after them, each compared
token for token with the reference. Prints identical counts per setting and per category, how
often the reference equals the fresh run, and the CPU.

With --out, each question's result is appended to a JSONL file as soon as it is known, and a run
given the same file again skips the questions already in it: a long run (Qwen on 240 questions)
resumes where a stopped one left off. --shard I/N takes every N-th question from the I-th, so N
processes with their own --out files share the questions; a run given all the files' rows (cat
them into one --out) only reports.

    python benchmarks/lossless_reuse.py -m smollm2-135m --max-new-tokens 64 -t 2 --out reuse.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.bench.runner import machine_info

GAMMAS = (1, 4, 8)
FRESH = "plain reused == fresh"
PLAIN_AGAIN = "plain again"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None, help="model path or known name (default: the embedded model)")
    p.add_argument("--questions", default=default_questions_path(), help="Spec-Bench JSONL (default: ../shared/specbench/dev.jsonl of a checkout)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSONL of per-question results: appended to, and resumed from")
    p.add_argument("--shard", default="0/1", type=parse_shard, help="I/N: only every N-th question, from the I-th (0-based)")
    args = p.parse_args()
    if not args.questions:
        p.error("no question file found: give --questions ../shared/specbench/dev.jsonl")

    lm = KangarooLM(args.model, n_ctx=4096, n_threads=args.threads, device="cpu")
    shard, n_shards = args.shard
    questions = load_questions(Path(args.questions), None, args.limit)[shard::n_shards]
    rows = read_rows(args.out, lm, args.max_new_tokens)
    done = {r["question_id"] for r in rows}
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    t0 = time.time()
    for i, q in enumerate(questions):
        if q.get("question_id") in done:
            continue
        row = {"question_id": q.get("question_id"), "category": q["category"], "model": lm.model_path.name,
               "max_new_tokens": args.max_new_tokens, **compare_on_reused_prefix(lm, q, args.max_new_tokens)}
        rows.append(row)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()
        print(f"\r{i + 1}/{len(questions)} questions, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if out:
        out.close()
    return report(rows, lm, args)


def compare_on_reused_prefix(lm: KangarooLM, q: dict, max_new: int) -> dict:
    prompt = lm.apply_chat_template([{"role": "user", "content": q["turns"][0]}])
    lm.reset()
    fresh = lm.generate(prompt, max_new, speculative=False).token_ids
    want = lm.generate(prompt, max_new, speculative=False).token_ids
    ok = {FRESH: want == fresh}
    for g in GAMMAS:  # each Kangaroo call starts from the state the one before left
        ok[f"gamma={g}"] = lm.generate(prompt, max_new, tau=0.0, gamma=g, lookup=False).token_ids == want
    ok[PLAIN_AGAIN] = lm.generate(prompt, max_new, speculative=False).token_ids == want  # after all of them
    return ok


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants I/N, e.g. 0/2, not {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be in [0, N)")
    return i, n


def read_rows(path: str | None, lm: KangarooLM, max_new: int) -> list[dict]:
    """The rows a previous run on the same model and length left in `path`."""
    if not path or not Path(path).is_file():
        return []
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        if (r.get("model"), r.get("max_new_tokens")) != (lm.model_path.name, max_new):
            sys.exit(f"{path} holds results for {r.get('model')} at {r.get('max_new_tokens')} tokens, "
                     f"not {lm.model_path.name} at {max_new}: give another --out")
    return rows


def report(rows: list[dict], lm: KangarooLM, args) -> int:
    settings = [f"gamma={g}" for g in GAMMAS] + [PLAIN_AGAIN]
    n = len(rows)
    by_cat = defaultdict(lambda: [0, 0])
    for r in rows:
        by_cat[r["category"]][0] += all(r[s] for s in settings)
        by_cat[r["category"]][1] += 1
    info = machine_info()
    print(f"model {lm.model_path.name}, adapter {lm.adapter_path.name if lm.adapter_path else None}, "
          f"{args.max_new_tokens} new tokens, {args.threads} threads, CPU {info['cpu']}")
    print("| setting | identical to plain (reused prefix) |\n|---|---|")
    for s in settings:
        print(f"| {s} | {sum(r[s] for r in rows)}/{n} |")
    print(f"| (plain on the cached prefix vs a fresh run) | {sum(r[FRESH] for r in rows)}/{n} |")
    print("| **all settings, per category** | " + ", ".join(f"{c} {a}/{b}" for c, (a, b) in sorted(by_cat.items()))
          + " |")
    return 0 if all(r[s] for r in rows for s in settings) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Batched generation for the data stages: tokens/s of 1..32 sequences at once through llama.cpp's
batch API, with one KV stream per sequence (`kv_unified=False`) against one unified cache, side
by side in one process, repeated; then whether every sequence's greedy tokens equal generating it
alone, and at a divergence how close the top two logits were (a near-tie).

    python benchmarks/batched_generation.py -t 1 --reps 2 --n-seq 1,4,8,16,32

Prompts: Spec-Bench dev questions (only measured here, never trained on), the chat template,
greedy, `--max-new-tokens` per answer; each configuration answers max(8, 2 x n_seq) questions, so a
slot is refilled at least once (continuous batching). Generated tokens are counted over this
process's CPU time (on a shared machine the wall time mostly measures the other jobs) and over the
wall time, prefill included (as the responses stage reports it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.train.batched import BatchedGenerator, GenJob

SHORT = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities", "qa",
         "math_reasoning", "translation"]


def questions(path: Path, n: int) -> list[str]:
    """The first turns of the first n questions of the short-prompt categories."""
    rows = load_questions(path, SHORT, n)
    if len(rows) < n:
        raise SystemExit(f"{path} has only {len(rows)} questions of the categories {', '.join(SHORT)}")
    return [r["turns"][0] for r in rows]


def run(model: Path, jobs: list[GenJob], n_seq: int, unified: bool, threads: int) -> tuple[float, float, dict]:
    """(tokens per wall second, tokens per CPU second of this process, {key: tokens})."""
    with BatchedGenerator(model, n_seq=n_seq, n_ctx_seq=1024, n_threads=threads, kv_unified=unified) as g:
        t0, c0 = time.perf_counter(), time.process_time()
        out = {r.key: r.token_ids for r in g.generate(jobs)}
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = sum(len(t) for t in out.values())
    return n / seconds, n / cpu, out


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n-seq", default="1,4,8,16,32")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--no-unified", action="store_true", help="skip the unified-cache runs")
    p.add_argument("--questions", default=default_questions_path(), type=Path,
                   help="Spec-Bench JSONL (default: the benchmark's, ../shared/specbench/dev.jsonl of a checkout)")
    args = p.parse_args()
    if args.questions is None:
        p.error("no question file found: give --questions FILE.jsonl")
    sizes = [int(s) for s in args.n_seq.split(",")]

    lm = KangarooLM(n_ctx=1024, n_threads=args.threads)
    qs = questions(args.questions, max(8, 2 * max(sizes)))
    jobs = [GenJob(f"q{i}", tuple(lm.tokenize(lm.apply_chat_template([{"role": "user", "content": q}]))),
                   args.max_new_tokens) for i, q in enumerate(qs)]
    print(f"CPU: {_cpu()}; load average at start {os.getloadavg()}; {args.threads} thread(s)")
    modes = [False] if args.no_unified else [False, True]
    speeds: dict[tuple[int, bool], list[float]] = {}   # tokens per CPU second
    walls: dict[tuple[int, bool], list[float]] = {}
    outputs: dict[tuple[int, bool], dict] = {}
    for rep in range(args.reps):
        for n in sizes:
            for unified in modes:
                if n == 1 and unified:
                    continue  # one sequence: the two layouts are the same
                wall, cpu, out = run(lm.model_path, jobs[:max(8, 2 * n)], n, unified, args.threads)
                speeds.setdefault((n, unified), []).append(cpu)
                walls.setdefault((n, unified), []).append(wall)
                outputs[(n, unified)] = out
                print(f"rep {rep}: n_seq {n:2d} {'unified' if unified else 'per-seq'}: {cpu:6.1f} tok per CPU-s, "
                      f"{wall:6.1f} tok/s wall (load {os.getloadavg()[0]:.1f})", flush=True)

    for name, table in (("tokens per CPU second (this process)", speeds), ("tokens per wall second", walls)):
        base = statistics.median(table[(1, False)])
        print(f"\n{name}, medians\n| sequences | per-sequence KV streams | one unified KV cache |\n|---|---|---|")
        for n in sizes:
            cells = []
            for unified in (False, True):
                v = table.get((n, unified)) or (table[(1, False)] if n == 1 else None)
                cells.append(f"{statistics.median(v):.1f} ({statistics.median(v) / base:.2f}x)" if v else "-")
            print(f"| {n} | {cells[0]} | {cells[1]} |")

    # greedy identity against each job run alone, and the top-2 logit gap where they part
    with BatchedGenerator(lm.model_path, n_seq=1, n_ctx_seq=1024, n_threads=args.threads) as alone:
        ref = {r.key: r.token_ids for r in alone.generate(jobs)}
        print("\n| configuration | sequences identical to alone | first divergences: position, top-2 logit gap alone |")
        print("|---|---|---|")
        prompts = {j.key: list(j.prompt_ids) for j in jobs}
        for (n, unified), out in sorted(outputs.items()):
            diverged = []
            for key, toks in out.items():
                i = first_divergence(toks, ref[key])
                if i is not None:
                    logits = alone.next_logits(prompts[key] + ref[key][:i])
                    top2 = np.sort(logits)[-2:]
                    diverged.append(f"{key}@{i}: {top2[1] - top2[0]:.4f}")
            print(f"| {n} {'unified' if unified else 'per-seq'} | {len(out) - len(diverged)}/{len(out)} | "
                  f"{'; '.join(diverged) or '-'} |")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return "unknown"


if __name__ == "__main__":
    main()

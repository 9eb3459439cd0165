"""Prefill (time to the first token's logits) of long prompts: our engine against llama.cpp on the
same GGUF and threads, in one process, medians over repetitions, with the logits of the prompt's
last token compared bit for bit.

    python benchmarks/prefill_speed.py -t 2 --reps 3 --categories summarization,rag --limit 8

Prompts: the dev questions' long-context categories through the model's chat template (only
measured here, never trained on). Run it once more with KE_KERNELS=0 for our engine without the
kernels (ggml's batched kernels for every weight, as before prefill took the kernels).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from kangaroo_edge import KangarooLM, _native
from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.bench.runner import machine_info
from kangaroo_edge.llamacpp import LlamaCpp


def median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--categories", default="summarization,rag")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("-m", "--model", default=None, help="GGUF path or known name (default: the default model)")
    p.add_argument("--questions", default=default_questions_path(), type=Path)
    args = p.parse_args()
    if args.questions is None:
        p.error("no question file found: give --questions FILE.jsonl")

    lm = KangarooLM(args.model, n_ctx=4096, n_threads=args.threads, adapter_path=None)
    oracle = LlamaCpp(lm.model_path, 4096, args.threads)
    rows = load_questions(args.questions, args.categories.split(","), args.limit)
    info = machine_info()
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores); {lm.model_path.name}; {args.threads} thread(s)")
    print("| question | tokens | ours tok/s | llama.cpp tok/s | ratio | last logits equal |\n|---|---|---|---|---|---|")
    ratios = []
    for r in rows:
        ids = lm.tokenize(lm.apply_chat_template([{"role": "user", "content": r["turns"][0]}]))
        # the decoder's prefill (batches of 512, as llama.cpp's n_batch), from an empty cache each time
        ours = median_seconds(lambda: (lm.reset(), lm.engine.start(ids, _native.SamplingParams())), args.reps)
        theirs = median_seconds(lambda: (oracle.llm.reset(), oracle.llm.eval(ids)), args.reps)
        same = np.array_equal(lm.engine.last_step()[1][0], oracle.last_logits())
        ratios.append(theirs / ours)
        print(f"| {r['question_id']} ({r['category']}) | {len(ids)} | {len(ids) / ours:.0f} | {len(ids) / theirs:.0f} | "
              f"{theirs / ours:.2f}x | {'yes' if same else 'NO'} |", flush=True)
    print(f"\nmedian speedup over llama.cpp: {statistics.median(ratios):.2f}x ({len(ratios)} prompts)")


if __name__ == "__main__":
    main()

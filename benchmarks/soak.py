"""Soak run: many short generations in one process, resident memory sampled as it goes.

Each generation takes the next of a fixed cycle of uses (plain, Kangaroo, streamed, a stream
closed after its first chunk, a chat completion, a reset), so every path is repeated hundreds of
times. A leak shows as RSS that keeps growing after the warm-up: the run fails when the growth
from the end of the warm-up to the end exceeds --max-growth-mb.

    python benchmarks/soak.py --generations 1000 -t 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from kangaroo_edge import KangarooLM
from kangaroo_edge.models import default_model_path
from kangaroo_edge.train.init_adapter import write_initial_adapter

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "List three fruits:",
           "Kangaroos live in", "2 + 2 =", "Write a haiku about rain.", "The best way to learn is"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def one_generation(lm: KangarooLM, i: int, max_tokens: int) -> int:
    """The i-th use of the cycle; returns the number of tokens it produced."""
    # a finite set of prompts (120 combinations of prompt, suffix and use): after one round every
    # graph shape has been built, so later growth is a leak, not the graph cache filling up
    prompt = PROMPTS[i % len(PROMPTS)] + (f" ({i % 10})" if i % 3 == 0 else "")
    kind = i % 6
    if kind == 0:
        return len(lm.generate(prompt, max_tokens=max_tokens, speculative=False).token_ids)
    if kind == 1:
        return len(lm.generate(prompt, max_tokens=max_tokens).token_ids)  # Kangaroo
    if kind == 2:
        return sum(len(c.token_ids) for c in lm.generate(prompt, max_tokens=max_tokens, stream=True,
                                                         temperature=0.8, seed=i))
    if kind == 3:
        stream = lm.generate(prompt, max_tokens=max_tokens, stream=True, speculative=i % 2 == 0)
        n = len(next(stream).token_ids)
        stream.close()  # interrupted
        return n
    if kind == 4:
        r = lm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=max_tokens)
        return r["usage"]["completion_tokens"]
    lm.reset()
    return len(lm.generate(prompt, max_tokens=max_tokens, speculative=False).token_ids)


def soak(generations: int, max_tokens: int, threads: int, warmup: int, model: Path, every: int = 100,
         log=print) -> dict:
    rss_start = rss_mb()
    lm = KangarooLM(model, n_ctx=512, n_threads=threads, device="cpu")
    adapter = Path(tempfile.mkdtemp(prefix="soak.")) / "adapter.gguf"
    lm.load_adapter(write_initial_adapter(lm, adapter, exit_layer=2))
    rss_loaded = rss_mb()
    for i in range(warmup):
        one_generation(lm, i, max_tokens)
    rss_warm = rss_mb()
    samples = [(0, rss_warm)]
    tokens, t0 = 0, time.perf_counter()
    for i in range(generations):
        tokens += one_generation(lm, warmup + i, max_tokens)
        if (i + 1) % every == 0 or i + 1 == generations:
            samples.append((i + 1, rss_mb()))
            log(f"{i + 1:6d} generations  RSS {samples[-1][1]:8.1f} MB")
    adapter.unlink()
    return {
        "generations": generations, "warmup": warmup, "max_tokens": max_tokens, "tokens": tokens,
        "seconds": round(time.perf_counter() - t0, 1),
        "rss_mb": {"process_start": round(rss_start, 1), "model_loaded": round(rss_loaded, 1),
                   "after_warmup": round(rss_warm, 1), "end": round(samples[-1][1], 1),
                   "max": round(max(r for _, r in samples), 1)},
        "growth_mb": round(samples[-1][1] - rss_warm, 1),
        "samples": [[n, round(r, 1)] for n, r in samples],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=120, help="generations before the start sample")
    p.add_argument("--every", type=int, default=100, help="sample RSS every this many generations")
    p.add_argument("--max-growth-mb", type=float, default=16.0)
    p.add_argument("--model", help="model GGUF (default: the embedded SmolLM2)")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args()
    model = Path(args.model) if args.model else default_model_path()
    summary = soak(args.generations, args.max_tokens, args.threads, args.warmup, model, args.every)
    summary["max_growth_mb"] = args.max_growth_mb
    text = json.dumps(summary, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    sys.exit(0 if summary["growth_mb"] <= args.max_growth_mb else 1)


if __name__ == "__main__":
    main()

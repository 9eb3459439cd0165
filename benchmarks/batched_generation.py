"""Many sequences at once on our engine (kangaroo_edge/batch.py): tokens/s of 1..16 sequences
against one, side by side in one process, repeated; then whether every sequence's greedy tokens
equal generating it alone.

    python benchmarks/batched_generation.py -t 2 --reps 3 --n-seq 1,2,4,8,12,16

Two measures. *Steps*: every slot busy with a sequence of the same prompt, the time of one decode
step (one weight pass for n rows), median over --steps steps: the engine's own scaling. *Jobs*:
chat prompts of the dev questions' short categories (only measured here, never trained on), greedy,
--max-new-tokens each, max(8, 2 n) jobs so that finished slots are refilled (continuous batching),
prefill included, as the responses stage runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kangaroo_edge import KangarooLM, _native
from kangaroo_edge.batch import BatchedGenerator, GenJob
from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.bench.runner import machine_info

SHORT = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities", "qa",
         "math_reasoning", "translation"]
N_CTX_SEQ = 1024


def step_seconds(lm: KangarooLM, n: int, steps: int, prompt: list[int]) -> float:
    """Median time of one step with n busy sequences."""
    batch = lm.engine.new_batch(n, N_CTX_SEQ)
    for _ in range(n):
        batch.add(prompt, _native.SamplingParams(), 0, 10 ** 6)
    for _ in range(3):  # graphs built, caches warm
        batch.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jobs_tokens_per_second(lm: KangarooLM, jobs: list[GenJob], n: int) -> tuple[float, dict]:
    with BatchedGenerator(lm, n_seq=n, n_ctx_seq=N_CTX_SEQ) as g:
        t0 = time.perf_counter()
        out = {r.key: r.token_ids for r in g.generate(jobs)}
        seconds = time.perf_counter() - t0
    return sum(len(t) for t in out.values()) / seconds, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n-seq", default="1,2,4,8,12,16")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("-m", "--model", default=None, help="GGUF path or known name (default: the default model)")
    p.add_argument("--questions", default=default_questions_path(), type=Path,
                   help="Spec-Bench JSONL (default: ../shared/specbench/dev.jsonl of a checkout)")
    args = p.parse_args()
    if args.questions is None:
        p.error("no question file found: give --questions FILE.jsonl")
    sizes = [int(s) for s in args.n_seq.split(",")]

    lm = KangarooLM(args.model, n_ctx=N_CTX_SEQ, n_threads=args.threads)
    rows = load_questions(args.questions, SHORT, max(8, 2 * max(sizes)))
    jobs = [GenJob(f"q{i}", tuple(lm.tokenize(lm.apply_chat_template([{"role": "user", "content": r["turns"][0]}]))),
                   args.max_new_tokens) for i, r in enumerate(rows)]
    info = machine_info()
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores); {lm.model_path.name}; {args.threads} thread(s)")
    steps: dict[int, list[float]] = {}
    speeds: dict[int, list[float]] = {}
    outputs: dict[int, dict] = {}
    for rep in range(args.reps):
        for n in sizes:
            steps.setdefault(n, []).append(step_seconds(lm, n, args.steps, list(jobs[0].prompt_ids)))
            speed, outputs[n] = jobs_tokens_per_second(lm, jobs[:max(8, 2 * n)], n)
            speeds.setdefault(n, []).append(speed)
            print(f"rep {rep}: {n:2d} sequences: step {steps[n][-1] * 1e3:6.2f} ms, jobs {speed:6.1f} tok/s", flush=True)

    step1, jobs1 = statistics.median(steps[sizes[0]]), statistics.median(speeds[sizes[0]])
    print(f"\nmedians of {args.reps} runs; ratios against {sizes[0]} sequence(s)\n"
          "| sequences | step (ms) | step tokens/s | vs one | jobs tokens/s (prefill included) | vs one |\n"
          "|---|---|---|---|---|---|")
    for n in sizes:
        s, j = statistics.median(steps[n]), statistics.median(speeds[n])
        print(f"| {n} | {s * 1e3:.2f} | {n / s:.1f} | {n / s / (sizes[0] / step1):.2f}x | {j:.1f} | {j / jobs1:.2f}x |")

    ref = {}
    for job in jobs:
        ref[job.key] = lm.generate(list(job.prompt_ids), job.max_new_tokens, temperature=0.0, speculative=False).token_ids
    print("\n| sequences | greedy answers identical to generating alone |\n|---|---|")
    for n, out in sorted(outputs.items()):
        print(f"| {n} | {sum(out[k] == ref[k] for k in out)}/{len(out)} |")


if __name__ == "__main__":
    main()

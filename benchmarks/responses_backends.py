"""The responses stage's two generators on the same jobs, one after the other in one process: our
engine (kangaroo_edge/batch.py, exact, at most 16 sequences a step) and torch
(train/torch_generator.py, bf16 where native, 64 a step). Answer tokens per second with prefill,
as the stage runs, and how far each torch answer follows the engine's (greedy, the same model).

    python -m kangaroo_edge.train.text_prompts --set text-v4 --seed 4 -o runs/text-v4-prompts.jsonl --n 3000
    python benchmarks/responses_backends.py --prompts runs/text-v4-prompts.jsonl -n 128 --max-new-tokens 256 -t 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kangaroo_edge import KangarooLM
from kangaroo_edge.batch import DEFAULT_N_SEQ, DEFAULT_TORCH_N_SEQ, BatchedGenerator, GenJob
from kangaroo_edge.bench.runner import machine_info
from kangaroo_edge.models import resolve_model
from kangaroo_edge.train.jsonl import read_jsonl
from kangaroo_edge.train.responses import prompt_ids
from kangaroo_edge.train.torch_generator import TorchGenerator


def run(generator, jobs: list[GenJob]) -> tuple[dict[str, list[int]], float]:
    t0 = time.perf_counter()
    out = {r.key: r.token_ids for r in generator.generate(jobs)}
    return out, time.perf_counter() - t0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None, help="GGUF (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' per line (a training prompt file)")
    p.add_argument("-n", "--n-prompts", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-c", "--ctx-size", type=int, default=2048)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    lm = KangarooLM(resolve_model(args.model), n_ctx=args.ctx_size, n_threads=args.threads, device="cpu")
    jobs = []
    for i, row in enumerate(read_jsonl(args.prompts)[:args.n_prompts]):
        ids = prompt_ids(lm, row["prompt"])
        if len(ids) + args.max_new_tokens <= args.ctx_size:
            jobs.append(GenJob(f"p{i}", tuple(ids), args.max_new_tokens))
    n_prompt = sum(len(j.prompt_ids) for j in jobs)
    print(f"{machine_info()['cpu']}; {args.threads} thread(s); {len(jobs)} prompts ({n_prompt} tokens), "
          f"up to {args.max_new_tokens} new tokens each, greedy")

    results = {}
    with BatchedGenerator(lm, DEFAULT_N_SEQ, args.ctx_size) as g:
        results["engine"] = run(g, jobs)
    with TorchGenerator(lm, DEFAULT_TORCH_N_SEQ, args.ctx_size) as g:
        results["torch"] = run(g, jobs)

    print("| generator | sequences a step | answer tokens | seconds | answer tokens/s (prefill included) |")
    print("|---|---|---|---|---|")
    for (name, (out, seconds)), n_seq in zip(results.items(), (DEFAULT_N_SEQ, DEFAULT_TORCH_N_SEQ)):
        n = sum(len(t) for t in out.values())
        print(f"| {name} | {n_seq} | {n} | {seconds:.1f} | {n / seconds:.1f} |")
    (engine, t_engine), (ours, t_torch) = results["engine"], results["torch"]
    speedup = (sum(map(len, ours.values())) / t_torch) / (sum(map(len, engine.values())) / t_engine)
    prefixes = [common_prefix(engine[k], ours[k]) for k in engine]
    print(f"torch / engine: {speedup:.2f}x answer tokens/s; torch's greedy answers follow the engine's for a "
          f"median {statistics.median(prefixes):.0f} tokens ({sum(p == len(engine[k]) for p, k in zip(prefixes, engine))}"
          f" of {len(prefixes)} identical)")


if __name__ == "__main__":
    main()

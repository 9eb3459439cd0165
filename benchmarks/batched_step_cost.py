"""What one llama.cpp decode step of k sequences costs against one sequence, SmolLM2-135M Q4_1,
CPU time of this process (on a shared machine the wall time mostly measures the other jobs):
per-sequence KV streams, one unified KV cache, flash attention; and (--features) whether
teacher-forcing several sequences in one call beats one call per sequence.

    python benchmarks/batched_step_cost.py --ctx 100 --n-seq 1,4,8,16,32
    python benchmarks/batched_step_cost.py --ctx 400 --n-seq 1,16 --layouts per-seq,unified
    python benchmarks/batched_step_cost.py --features
"""

from __future__ import annotations

import argparse
import os
import time

from kangaroo_edge.models import default_model_path
from kangaroo_edge.train.batched import BatchedGenerator

LAYOUTS = {"per-seq": dict(kv_unified=False), "unified": dict(kv_unified=True),
           "flash-attn": dict(kv_unified=False, flash_attn=True)}


def step_cost(n: int, ctx: int, steps: int, layout: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one decode step of n sequences with ctx cached tokens each."""
    with BatchedGenerator(default_model_path(), n_seq=n, n_ctx_seq=ctx + steps + 8, n_threads=1, **layout) as g:
        for s in range(n):
            g._decode([(100 + i % 500, i, s, False) for i in range(ctx)])
        g._decode([(200, ctx, s, True) for s in range(n)])
        t, c = time.perf_counter(), time.process_time()
        for k in range(steps):
            g._decode([(200, ctx + 1 + k, s, True) for s in range(n)])
        return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def features_cost(k: int = 4, length: int = 300) -> tuple[float, float]:
    """CPU seconds to teacher-force k sequences: one llama_decode each, and all in one call."""
    seqs = [[(100 + 13 * s + i) % 40000 for i in range(length)] for s in range(k)]
    with BatchedGenerator(default_model_path(), n_seq=k, n_ctx_seq=length + 8, n_threads=1, n_batch=k * length) as g:
        c = time.process_time()
        for s in range(k):
            g.clear(s)
            g._decode([(t, i, s, False) for i, t in enumerate(seqs[s])])
        one = time.process_time() - c
        c = time.process_time()
        for s in range(k):
            g.clear(s)
        g._decode([(t, i, s, False) for s in range(k) for i, t in enumerate(seqs[s])])
        return one, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ctx", type=int, default=100, help="cached tokens per sequence")
    p.add_argument("--n-seq", default="1,4,8,16,32")
    p.add_argument("--layouts", default="per-seq,unified,flash-attn")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--features", action="store_true", help="measure teacher-forced batching instead")
    args = p.parse_args()
    if args.features:
        one, together = features_cost()
        print(f"4 x 300 tokens teacher-forced: one sequence per call {1200 / one:.0f} tok per CPU-s, all in one "
              f"call {1200 / together:.0f} ({one / together:.2f}x) (load {os.getloadavg()[0]:.1f})")
        return
    for n in (int(x) for x in args.n_seq.split(",")):
        for name in args.layouts.split(","):
            wall, cpu = step_cost(n, args.ctx, args.steps, LAYOUTS[name])
            print(f"n_seq {n:2d} {name:10s} ctx {args.ctx}: wall {wall * 1e3:7.1f} ms/step, CPU {cpu * 1e3:6.1f} "
                  f"ms/step = {n / cpu:5.1f} tok per CPU-s (load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()

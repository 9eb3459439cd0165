"""The fit's LM-head loss on the default model's head (V = 49152): the full soft cross-entropy
against the restricted one (the fit's --draft-vocab N: N draft tokens + a pooled "other", the
teacher from its cached top-32 as the fit reads it), forward + backward over one chunk of
positions, one thread, CPU time.

    python benchmarks/restricted_loss_speed.py --positions 512 --vocab 8192 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kangaroo_edge.models import default_model_path
from kangaroo_edge.train.base_model import load_lm_head
from kangaroo_edge.train.fit import RestrictedHead, restricted_soft_cross_entropy, soft_cross_entropy
from kangaroo_edge.train.teacher import TOP_K


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    head = load_lm_head(default_model_path())
    g = torch.Generator().manual_seed(0)
    h, target = (0.5 * torch.randn(args.positions, head.shape[1], generator=g) for _ in range(2))
    rh = RestrictedHead.build(head, torch.randperm(head.shape[0], generator=g)[:args.vocab].tolist())
    top = torch.topk(torch.softmax(target @ head.T, -1), TOP_K, dim=-1)  # the cache, read from disk in a fit
    losses = {"full": lambda x: soft_cross_entropy(x, target, head),
              f"restricted {args.vocab} + other": lambda x: restricted_soft_cross_entropy(
                  x, rh.pool_top_k(top.indices, top.values), rh)}
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.reps):
        for name, f in losses.items():
            x = h.clone().requires_grad_()
            c = time.process_time()
            f(x).sum().backward()
            times[name].append(time.process_time() - c)
    base = statistics.median(times["full"])
    for name, v in times.items():
        print(f"{name}: {statistics.median(v) * 1e3:.0f} ms CPU per {args.positions} positions ({base / statistics.median(v):.2f}x)")


if __name__ == "__main__":
    main()

"""The features stage's two backends side by side in one process: the engine (the states decoding
sees) and torch (train/torch_teacher.py, bf16 products), on the same sequences of a work
directory's responses.jsonl, alternating per sequence. Prints each backend's tokens/s (median of
the per-sequence rates) and how close torch's states are: the cosine of the final normed states
and how often the teacher's greedy token (normed @ head) is the same.

    python benchmarks/features_speed.py --responses runs/exp/responses.jsonl -n 20 -t 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kangaroo_edge.llm import KangarooLM
from kangaroo_edge.models import resolve_model
from kangaroo_edge.train.base_model import load_lm_head
from kangaroo_edge.train.features import extract, training_sequence
from kangaroo_edge.train.torch_teacher import TorchTeacher


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--responses", required=True, help="a work directory's responses.jsonl")
    p.add_argument("-m", "--model", default=None, help="GGUF (default: the default model)")
    p.add_argument("-n", type=int, default=20, help="sequences, from the file's start")
    p.add_argument("--exit-layer", type=int, default=2)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-c", "--ctx-size", type=int, default=2048)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    lm = KangarooLM(path, n_ctx=args.ctx_size, n_threads=args.threads, device="cpu")
    teacher = TorchTeacher(path)
    head = load_lm_head(path).numpy()
    with open(args.responses) as f:
        seqs = [training_sequence(json.loads(line), args.ctx_size)[0] for line, _ in zip(f, range(args.n))]
    extract(lm, seqs[0][:32], args.exit_layer)  # warm-up: graph allocation, torch's kernel choice
    teacher.extract(seqs[0][:32], args.exit_layer)

    rates: dict[str, list[float]] = {"engine": [], "torch": []}
    cosines, same_token, n_tokens = [], 0, 0
    for ids in seqs:
        t0 = time.perf_counter()
        _, normed_engine = extract(lm, ids, args.exit_layer)
        t1 = time.perf_counter()
        _, normed_torch = teacher.extract(ids, args.exit_layer)
        t2 = time.perf_counter()
        rates["engine"].append(len(ids) / (t1 - t0))
        rates["torch"].append(len(ids) / (t2 - t1))
        cos = (normed_engine * normed_torch).sum(1) / np.linalg.norm(normed_engine, axis=1) / np.linalg.norm(normed_torch, axis=1)
        cosines.append(float(cos.mean()))
        same_token += int(((normed_engine @ head.T).argmax(1) == (normed_torch @ head.T).argmax(1)).sum())
        n_tokens += len(ids)

    engine, torch_rate = statistics.median(rates["engine"]), statistics.median(rates["torch"])
    print(f"{cpu_name()}, {args.threads} threads, {len(seqs)} sequences, {n_tokens} tokens, exit layer {args.exit_layer}")
    print(f"engine: {engine:.0f} tok/s; torch (bf16): {torch_rate:.0f} tok/s ({torch_rate / engine:.2f}x)")
    print(f"final normed states: mean cosine {statistics.mean(cosines):.5f}; teacher's greedy token the same at "
          f"{same_token / n_tokens:.2%} of positions")


if __name__ == "__main__":
    main()

"""What verifying k rows costs against one row: our small-batch kernels and ggml's mul_mat on the
same weights, side by side in one process, for k = 1..16.

Rows: the default model's full set of matmuls (SmolLM2-135M Q4_1: every layer's seven matrices
and the tied Q8_0 head, the matmuls of one decode step), then each weight type alone, on random
blocks of the default model's layer shapes (30 x 7 matrices; per type the same shapes, so the
types compare). Each measurement is the median of --reps runs, ours and ggml's alternating, so a
load that comes and goes on a shared machine hits both alike. Bytes streamed are the weights'
(the activations are a few KB); the floor is the machine's streaming read bandwidth, measured here.

    python benchmarks/verify_cost.py [--threads 2] [--reps 7] [--ks 1,2,4,8,16] [--types q4_1,q8_0]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGML_QUANT_SIZES, GGUFReader

from kangaroo_edge import _native
from kangaroo_edge.models import default_model_path

K = _native.kernels
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
BANDWIDTH_BYTES = 512 * 2**20  # far larger than any L3 here


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", "-t", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--ks", default=",".join(str(k) for k in range(1, 17)), help="batch sizes, comma-separated (1 first)")
    p.add_argument("--types", default=",".join(TYPES), help="weight types for the per-type rows ('' for none)")
    p.add_argument("--cpu-time", action="store_true",
                   help="with -t 1: time the calling thread's CPU time (ggml computes there), not wall time: "
                        "on an oversubscribed machine the time the thread was descheduled does not count")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def model_cases(path) -> list[tuple[int, int, np.ndarray]]:
    """Every matrix of one decode step: the layers' seven and the head (tied: the embedding)."""
    cases, head = [], None
    for t in GGUFReader(str(path)).tensors:
        if len(t.shape) != 2:
            continue
        data = np.ascontiguousarray(np.asarray(t.data, dtype=np.uint8).reshape(int(t.shape[1]), -1))
        if t.name.startswith("blk."):
            cases.append((int(t.tensor_type), int(t.shape[0]), data))
        elif t.name in ("output.weight", "token_embd.weight") and (head is None or t.name == "output.weight"):
            head = (int(t.tensor_type), int(t.shape[0]), data)
    return cases + [head]


def random_cases(qtype: QT, shapes: list[tuple[int, int]], rng) -> list[tuple[int, int, np.ndarray]]:
    """Random blocks of `qtype` in the given (n, m) shapes; the fp16 scale fields made finite."""
    block, size = GGML_QUANT_SIZES[qtype]
    scale_off = {QT.Q6_K: [208]}.get(qtype, [0, 2] if qtype in (QT.Q4_1, QT.Q5_1, QT.Q4_K, QT.Q5_K) else [0])
    out = []
    for n, m in shapes:
        raw = rng.integers(0, 256, size=(m, n // block, size), dtype=np.uint8)
        for off in scale_off:
            raw[:, :, off:off + 2] = np.full((m, n // block), 1e-3, np.float16).view(np.uint8).reshape(m, -1, 2)
        out.append((int(qtype), n, raw.reshape(m, -1)))
    return out


def time_pass(cases, k: int, threads: int, reps: int, rng, clock=time.perf_counter) -> tuple[list[float], int]:
    """Median seconds of one pass over all cases with k rows: [ours, ggml's, ggml's with the weights
    it repacks in CPU_REPACK (as llama.cpp loads them; None when it repacks none)]; weight bytes."""
    graphs = [K.MatmulGraph(cases, k, True, threads), K.MatmulGraph(cases, k, False, threads)]
    repacked = K.MatmulGraph(cases, k, False, threads, repack=True)
    if repacked.n_repacked:
        graphs.append(repacked)
    for g in graphs:
        for i, (_, n, _) in enumerate(cases):
            g.set_input(i, rng.standard_normal((k, n)).astype(np.float32))
        g.compute()  # warm-up: first touch of the work buffers
    times: list[list[float]] = [[] for _ in graphs]
    for _ in range(reps):
        for j, g in enumerate(graphs):
            t0 = clock()
            g.compute()
            times[j].append(clock() - t0)
    medians = [statistics.median(t) for t in times]
    return medians + [None] * (3 - len(medians)), graphs[0].weight_bytes


def report(title: str, cases, ks: list[int], args, bandwidth: float, rng) -> None:
    clock = time.thread_time if args.cpu_time else time.perf_counter
    rows = {k: time_pass(cases, k, args.threads, args.reps, rng, clock) for k in ks}
    first = rows[1] if 1 in rows else rows[ks[0]]
    (ours1, ggml1, rep1), nbytes = first
    # llama.cpp's one-row step multiplies repacked weights by ggml's repacked kernel
    step1 = rep1 if rep1 is not None else ggml1
    print(f"\n### {title}: {len(cases)} matrices, {nbytes / 1e6:.1f} MB streamed per pass, "
          f"floor {1e3 * nbytes / bandwidth:.2f} ms")
    rep_cols = " ggml repacked ms |" if rep1 is not None else ""
    print(f"| k | ggml ms | ggml / k=1 |{rep_cols} ours ms | ours / ours k=1 | ours / ggml k=1 | ours GB/s (% of floor) |")
    print("|---:|---:|---:|" + ("---:|" if rep1 is not None else "") + "---:|---:|---:|---:|")
    for k, ((ours, ggml, rep), _) in rows.items():
        rep_cell = f" {1e3 * rep:.2f} |" if rep is not None else ""
        print(f"| {k} | {1e3 * ggml:.2f} | {ggml / ggml1:.2f}x |{rep_cell} {1e3 * ours:.2f} | {ours / ours1:.2f}x | "
              f"{ours / step1:.2f}x | {nbytes / ours / 1e9:.1f} ({100 * nbytes / ours / bandwidth:.0f}%) |")


def main(args: argparse.Namespace) -> int:
    if args.cpu_time and args.threads != 1:
        raise SystemExit("--cpu-time measures the calling thread: use it with -t 1")
    ks = [int(k) for k in args.ks.split(",") if k]
    rng = np.random.default_rng(0)
    bandwidth = K.read_bandwidth(BANDWIDTH_BYTES, args.threads, 9)
    print(f"# verify_cost: {cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} threads, "
          f"kernels path {K.best_isa()} (available: {', '.join(K.isas())})")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
          f"{os.getloadavg()[0]:.2f}, ggml {_native.ggml_version()}, median of {args.reps}"
          + (", thread CPU time" if args.cpu_time else ", wall time"))
    print(f"# streaming read bandwidth ({args.threads} threads, {BANDWIDTH_BYTES >> 20} MiB): {bandwidth / 1e9:.1f} GB/s")

    path = default_model_path()
    report(f"default model, all matmuls of one step ({path.name})", model_cases(path), ks, args, bandwidth, rng)

    shapes = [(c[1], c[2].shape[0]) for c in model_cases(path)[:-1]]  # the layers' matrices
    for name in [t for t in args.types.split(",") if t]:
        qtype = QT[name.upper()]
        block = GGML_QUANT_SIZES[qtype][0]
        # K-quants need rows of whole 256-element super-blocks: 576 -> 768 (1536 stays)
        type_shapes = [(-(-n // block) * block, m) for n, m in shapes]
        what = "shapes" if type_shapes == shapes else "shapes, rows padded to 256-element super-blocks"
        report(f"{qtype.name}, random blocks in the default model's layer {what}",
               random_cases(qtype, type_shapes, rng), ks, args, bandwidth, rng)
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setup_arg_parser(parser)
    raise SystemExit(main(parser.parse_args()))

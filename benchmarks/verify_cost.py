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
    p.add_argument("--ks", default=",".join(str(k) for k in range(1, 17)), help="batch sizes, comma-separated")
    p.add_argument("--types", default=",".join(TYPES), help="weight types for the per-type rows ('' for none)")


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


def time_pair(cases, k: int, threads: int, reps: int, rng) -> tuple[float, float, int]:
    """Median seconds of one pass over all cases with k rows: (ours, ggml's); and weight bytes."""
    graphs = [K.MatmulGraph(cases, k, use, threads) for use in (True, False)]
    for g in graphs:
        for i, (_, n, _) in enumerate(cases):
            g.set_input(i, rng.standard_normal((k, n)).astype(np.float32))
        g.compute()  # warm-up: first touch of the work buffers
    times: list[list[float]] = [[], []]
    for _ in range(reps):
        for j, g in enumerate(graphs):
            t0 = time.perf_counter()
            g.compute()
            times[j].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1]), graphs[0].weight_bytes


def report(title: str, cases, ks: list[int], args, bandwidth: float, rng) -> None:
    rows = []
    for k in ks:
        rows.append((k, *time_pair(cases, k, args.threads, args.reps, rng)))
    ours1 = next((o for k, o, _, _ in rows if k == 1), rows[0][1])
    ggml1 = next((g for k, _, g, _ in rows if k == 1), rows[0][2])
    nbytes = rows[0][3]
    print(f"\n### {title}: {len(cases)} matrices, {nbytes / 1e6:.1f} MB streamed per pass, "
          f"floor {1e3 * nbytes / bandwidth:.2f} ms")
    print("| k | ggml ms | ggml / ggml k=1 | ours ms | ours / ours k=1 | ours / ggml k=1 | ours GB/s (% of floor) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k, ours, ggml, _ in rows:
        gbs = nbytes / ours / 1e9
        print(f"| {k} | {1e3 * ggml:.2f} | {ggml / ggml1:.2f}x | {1e3 * ours:.2f} | {ours / ours1:.2f}x | "
              f"{ours / ggml1:.2f}x | {gbs:.1f} ({100 * nbytes / ours / bandwidth:.0f}%) |")


def main(args: argparse.Namespace) -> int:
    ks = [int(k) for k in args.ks.split(",") if k]
    rng = np.random.default_rng(0)
    bandwidth = K.read_bandwidth(BANDWIDTH_BYTES, args.threads, 9)
    print(f"# verify_cost: {cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} threads, "
          f"kernels path {K.best_isa()} (available: {', '.join(K.isas())})")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
          f"{os.getloadavg()[0]:.2f}, ggml {_native.ggml_version()}, median of {args.reps}")
    print(f"# streaming read bandwidth ({args.threads} threads, {BANDWIDTH_BYTES >> 20} MiB): {bandwidth / 1e9:.1f} GB/s")

    path = default_model_path()
    report(f"default model, all matmuls of one step ({path.name})", model_cases(path), ks, args, bandwidth, rng)

    shapes = [(c[1], c[2].shape[0]) for c in model_cases(path)[:-1]]  # the layers' matrices
    for name in [t for t in args.types.split(",") if t]:
        qtype = QT[name.upper()]
        report(f"{qtype.name}, random blocks in the default model's layer shapes", random_cases(qtype, shapes, rng),
               ks, args, bandwidth, rng)
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setup_arg_parser(parser)
    raise SystemExit(main(parser.parse_args()))

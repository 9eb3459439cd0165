"""Where a plain decoding step's time goes: per kind of ggml node, against the step's ordinary
time and llama.cpp's step on the same GGUF and threads.

The profile runs every node as its own graph computation (native/op_profile.h), so each node's
time includes one launch of ggml's CPU threads. Nodes that compute nothing (views, reshapes,
permutes) measure that launch alone; its median is subtracted from every node to estimate the
node's own work, and `launches` is what the ordinary step spends between nodes at most.

    python benchmarks/step_profile.py -t 2 --tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench.runner import LlamaCppPlain, _llama, machine_info

PROMPT = "Explain in a few paragraphs how a bicycle's gears make climbing a hill easier."
# Node kinds that compute nothing on the CPU backend: their time is one launch.
NO_OP_KINDS = ("VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE", "NONE")
# Groups for the summary: what a step spends its time on.
GROUPS = (("attention", ("SOFT_MAX", "FLASH_ATTN_EXT", "(cache)")), ("weight products", ("MUL_MAT", "CUSTOM")),
          ("K/V writes", ("SET_ROWS",)), ("copies", ("CPY", "CONT")), ("norms", ("RMS_NORM",)), ("RoPE", ("ROPE",)),
          ("element-wise", ("MUL", "ADD", "SCALE", "SWIGLU", "GEGLU", "SILU", "GELU", "TANH")),
          ("gathers", ("GET_ROWS",)))


def group_of(kind: str) -> str:
    op = kind.split(" ")[0]
    for name, ops in GROUPS:
        if op in ops or kind.endswith(ops):
            return name
    return "launches only" if op in NO_OP_KINDS else "other"


def step_seconds(lm: KangarooLM, prompt: list[int], n: int, reps: int) -> float:
    """Median over reps of the ordinary plain step (generation time per token after the first)."""
    times = []
    for _ in range(reps):
        lm.reset()
        s = lm.generate(prompt, n, temperature=0.0, speculative=False).stats
        times.append(s.predicted_ms * 1e-3 / max(s.predicted_n - 1, 1))
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None, help="model path or known name (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64, help="tokens generated per measurement")
    p.add_argument("--reps", type=int, default=5, help="ordinary runs per system (medians)")
    args = p.parse_args()

    lm = KangarooLM(args.model, n_ctx=2048, n_threads=args.threads, device="cpu")
    prompt = lm.tokenize(lm.apply_chat_template([{"role": "user", "content": PROMPT}]))
    llama = LlamaCppPlain(_llama(str(lm.model_path), 2048, args.threads))
    ours = step_seconds(lm, prompt, args.tokens, args.reps)
    theirs = statistics.median(
        (lambda r: r.generation_seconds / max(r.n_tokens - 1, 1))(llama.run(prompt, args.tokens)) for _ in range(args.reps))

    e = lm.engine
    lm.reset()
    r = lm.generate(prompt, 1, temperature=0.0, speculative=False)  # the prefill, outside the profile
    e.clear_op_profile()
    e.set_profiling(True)
    try:
        r = lm.generate(prompt + list(r.token_ids), args.tokens, temperature=0.0, speculative=False)
    finally:
        e.set_profiling(False)
    graphs, by_kind = e.op_profile()
    # the continuation's own prefill (its last tokens) is one graph; the rest are steps
    steps = max(graphs - 1, 1)
    launch = statistics.median(sec / n for k, (n, sec) in by_kind.items() if k.split(" ")[0] in NO_OP_KINDS)
    nodes = sum(n for n, _ in by_kind.values()) / graphs
    profiled = sum(sec for _, sec in by_kind.values()) / graphs

    info = machine_info()
    print(f"model {lm.model_path.name}, {args.threads} threads, CPU {info['cpu']}, "
          f"load {info.get('load_average', ['?'])[0]}")
    print(f"ordinary step: ours {ours * 1e3:.2f} ms, llama.cpp {theirs * 1e3:.2f} ms ({theirs / ours:.2f}x ours); "
          f"profiled step {profiled * 1e3:.2f} ms, {nodes:.0f} nodes, one launch {launch * 1e6:.1f} us")
    print("\n| node kind | nodes per step | ms per step (profiled) | ms less launches |\n|---|---|---|---|")
    grouped: dict[str, float] = defaultdict(float)
    for kind, (n, sec) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        own = max(sec - n * launch, 0.0) / graphs
        grouped[group_of(kind)] += own
        print(f"| {kind} | {n / graphs:.0f} | {sec / graphs * 1e3:.2f} | {own * 1e3:.2f} |")
    grouped["launches (between nodes)"] = nodes * launch
    print("\n| where the step goes | ms per step | share of the ordinary step |\n|---|---|---|")
    for name, sec in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {sec * 1e3:.2f} | {sec / ours:.0%} |")
    print(f"\n(steps profiled: {steps}; shares can sum past 100%: a launch in the profile costs more "
          f"than a barrier between nodes of one graph)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

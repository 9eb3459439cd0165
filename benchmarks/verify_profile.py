"""Where a verification of k rows goes, against a plain step: the deep layers' products (FFN,
attention weights), attention over the cache, the LM head and the rest, per verification.

Kangaroo runs with drafting forced (tau 0, gamma k - 1, no prompt lookup), so every cycle verifies
k rows; the profile (native/op_profile.h: each node as its own graph computation) is summed by node
name, and the nodes of layers at or past the adapter's exit layer (which only verification runs)
plus the model's head are divided by the number of verifications. k = 1 is a plain step (all
layers from the exit layer on, for the same comparison). Node times include one launch each.

    KE_KERNEL_ISA=avx2 python benchmarks/verify_profile.py -t 1 --rows 1,2,4,8
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

from kangaroo_edge import KangarooLM, _native
from kangaroo_edge.bench.runner import machine_info

PROMPT = "Explain in a few paragraphs how a bicycle's gears make climbing a hill easier."
# node name (without its layer suffix) -> the part of a verification it belongs to
PARTS = (("FFN products", ("ffn_gate", "ffn_up", "ffn_down", "ffn_out")),
         ("attention weights", ("Qcur", "Kcur", "Vcur", "attn_out", "wo")),
         ("attention on the cache", ("kq", "kqv", "kq_soft_max", "kqv_out", "kq_scaled", "kq_masked")))


def part_of(base: str) -> str:
    for name, bases in PARTS:
        if base in bases or any(base.startswith(b + "_") for b in bases):
            return name
    return "the rest"


def profile(lm: KangarooLM, prompt: list[int], rows: int, tokens: int) -> tuple[int, dict]:
    """Verifications run and ms per verification by part."""
    e, exit_layer = lm.engine, lm.adapter_info["exit_layer"]
    lm.reset()
    first = lm.generate(prompt, 1, temperature=0.0, speculative=False).token_ids  # the prefill, outside
    e.clear_op_profile()
    e.set_profiling(True)
    try:
        kw = dict(speculative=False) if rows == 1 else dict(tau=0.0, gamma=rows - 1, lookup=False)
        r = lm.generate(prompt + list(first), tokens, temperature=0.0, **kw)
    finally:
        e.set_profiling(False)
    n = r.stats.cycles if rows > 1 else r.stats.predicted_n - 1
    parts: dict[str, float] = defaultdict(float)
    for name, (_, sec) in e.op_profile_by_name().items():
        if "adapter" in name:
            continue
        if name.startswith("result_output"):
            parts["LM head"] += sec
            continue
        m = re.match(r"(.+)-(\d+)$", name)
        if m and int(m.group(2)) >= exit_layer:
            parts[part_of(m.group(1))] += sec
    return n, {k: v / max(n, 1) * 1e3 for k, v in parts.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="model path or known name (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--rows", default="1,2,4,8", help="rows per verification, comma-separated (1: a plain step)")
    p.add_argument("--tokens", type=int, default=64, help="tokens generated per profile")
    args = p.parse_args()

    lm = KangarooLM(args.model, n_ctx=2048, n_threads=args.threads, device="cpu")
    if lm.adapter_info is None:
        raise SystemExit("the model has no adapter: nothing drafts, so nothing is verified")
    prompt = lm.tokenize(lm.apply_chat_template([{"role": "user", "content": PROMPT}]))
    results = {k: profile(lm, prompt, k, args.tokens) for k in (int(x) for x in args.rows.split(","))}
    info = machine_info()
    print(f"model {lm.model_path.name}, exit layer {lm.adapter_info['exit_layer']}, {args.threads} thread(s), "
          f"CPU {info['cpu']}, kernels {_native.kernels.best_isa()}")
    names = [n for n, _ in PARTS] + ["LM head", "the rest"]
    base = sum(results[min(results)][1].values())
    print("\n| rows | verifications | " + " | ".join(f"{n} (ms)" for n in names) + " | total (ms) | × one row |")
    print("|---" * (len(names) + 4) + "|")
    for k, (n, parts) in results.items():
        total = sum(parts.values())
        print(f"| {k} | {n} | " + " | ".join(f"{parts.get(name, 0.0):.2f}" for name in names) +
              f" | {total:.2f} | {total / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

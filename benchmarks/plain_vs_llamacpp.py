"""Plain greedy decoding: our engine against llama-cpp-python on the same GGUF, prompts and threads.

    python benchmarks/plain_vs_llamacpp.py -t 2 --prompts 8 --max-new-tokens 64 [--quantize q4_0]

Prints, for each model file: prefill and generation tokens/s of each side and their ratio (medians
over prompts; the two sides alternate which goes first on each prompt), load time of each (in this
process), and peak memory of each: the growth of RSS when loading the model and generating a few
tokens, measured in a fresh subprocess per side (in one process the two would share the count).
--quantize q4_0 also makes a Q4_0 copy of the model with llama.cpp's quantizer (cached under
~/.cache/kangaroo-edge/models/) and benchmarks it too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kangaroo_edge.bench.questions import default_questions_path, load_questions
from kangaroo_edge.bench.runner import LlamaCppPlain, OursSystem, _llama
from kangaroo_edge import llamacpp
from kangaroo_edge.models import default_cache_dir

QUANT_TYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
N_CTX = 2048


def quantize(src: Path, qtype: str) -> Path:
    """A `qtype` copy of src, made once by llama.cpp's quantizer and cached."""
    out = default_cache_dir() / "models" / f"{src.stem.split('.')[0]}.{qtype.upper()}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    llamacpp.quantize(src, tmp, QUANT_TYPES[qtype], n_threads=2)  # the shipped model is already quantized (Q4_1)
    tmp.rename(out)
    return out


def memory_probe(side: str, model: str, threads: int) -> dict:
    """Runs in a fresh subprocess: RSS after imports, then peak RSS after load + 16 tokens."""
    def status_kib(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    from kangaroo_edge import KangarooLM
    import llama_cpp  # noqa: F401  (both sides pay the same imports before the baseline)

    base = status_kib("VmRSS")
    prompt = list(range(1, 65))
    if side == "ours":
        lm = KangarooLM(model, n_ctx=N_CTX, n_threads=threads, device="cpu")
        OursSystem(lm, speculative=False).run(prompt, 16)
    else:
        LlamaCppPlain(_llama(model, N_CTX, threads)).run(prompt, 16)
    # VmHWM, not getrusage's ru_maxrss: the latter is inherited from the parent across fork/exec
    peak = status_kib("VmHWM")
    return {"rss_after_imports_mib": base / 1024, "peak_rss_mib": peak / 1024,
            "peak_growth_mib": (peak - base) / 1024}


def measure_memory(side: str, model: str, threads: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import plain_vs_llamacpp as b; print(json.dumps(b.memory_probe({side!r}, {model!r}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_model(model: str, questions: list[dict], threads: int, max_new: int) -> dict:
    from kangaroo_edge import KangarooLM

    t = time.perf_counter()
    lm = KangarooLM(model, n_ctx=N_CTX, n_threads=threads, device="cpu")
    load = {"ours": time.perf_counter() - t}
    t = time.perf_counter()
    ref = LlamaCppPlain(_llama(str(lm.model_path), N_CTX, threads))
    load["llama.cpp"] = time.perf_counter() - t
    sides = {"ours": OursSystem(lm, speculative=False), "llama.cpp": ref}
    prompts = [lm.tokenize(lm.apply_chat_template([{"role": "user", "content": q["turns"][0]}])) for q in questions]
    for s in sides.values():
        s.run(prompts[0], 8)  # warm-up
    rows = []
    for i, ids in enumerate(prompts):
        order = ["ours", "llama.cpp"] if i % 2 == 0 else ["llama.cpp", "ours"]
        runs = {name: sides[name].run(ids, max_new) for name in order}
        rows.append({"n_prompt_tokens": len(ids), "same_tokens": runs["ours"].token_ids == runs["llama.cpp"].token_ids,
                     **{f"{n}_{k}": getattr(r, k) for n, r in runs.items()
                        for k in ("tokens_per_second", "prefill_tokens_per_second", "n_tokens")}})
    med = {f"{n}_{k}": statistics.median(r[f"{n}_{k}"] for r in rows)
           for n in sides for k in ("tokens_per_second", "prefill_tokens_per_second")}
    ratio = {k: statistics.median(r[f"ours_{k}"] / r[f"llama.cpp_{k}"] for r in rows)
             for k in ("tokens_per_second", "prefill_tokens_per_second")}
    return {"model": str(lm.model_path), "load_seconds": load, "medians": med, "ratio_ours_over_llamacpp": ratio,
            "same_tokens": sum(r["same_tokens"] for r in rows), "n_prompts": len(rows), "rows": rows}


def report(res: dict) -> str:
    m, r, ld, mem = res["medians"], res["ratio_ours_over_llamacpp"], res["load_seconds"], res["memory"]
    lines = [f"model: {res['model']}",
             "| | ours | llama.cpp | ours / llama.cpp |", "|---|---|---|---|",
             f"| prefill tok/s (median) | {m['ours_prefill_tokens_per_second']:.0f} | "
             f"{m['llama.cpp_prefill_tokens_per_second']:.0f} | {r['prefill_tokens_per_second']:.2f}× |",
             f"| generation tok/s (median) | {m['ours_tokens_per_second']:.1f} | "
             f"{m['llama.cpp_tokens_per_second']:.1f} | {r['tokens_per_second']:.2f}× |",
             f"| load time (s) | {ld['ours']:.2f} | {ld['llama.cpp']:.2f} | {ld['ours'] / ld['llama.cpp']:.2f}× |",
             f"| peak RSS growth (MiB) | {mem['ours']['peak_growth_mib']:.0f} | {mem['llama.cpp']['peak_growth_mib']:.0f} | "
             f"{mem['ours']['peak_growth_mib'] / mem['llama.cpp']['peak_growth_mib']:.2f}× |",
             f"\nsame greedy tokens on {res['same_tokens']} of {res['n_prompts']} prompts"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=2, help="threads on both sides (default 2)")
    p.add_argument("--prompts", type=int, default=8, help="number of Spec-Bench dev questions (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    p.add_argument("--questions", default=default_questions_path(), type=Path,
                   help="Spec-Bench JSONL (default: the benchmark's, ../shared/specbench/dev.jsonl of a checkout)")
    p.add_argument("--quantize", choices=sorted(QUANT_TYPES), default=None,
                   help="also benchmark a copy of the model in this type (made with llama.cpp's quantizer, cached)")
    p.add_argument("--json", default=None, help="write the results as JSON")
    args = p.parse_args()
    if args.questions is None:
        p.error("no question file found: give --questions FILE.jsonl")

    from kangaroo_edge.models import resolve_model

    questions = load_questions(args.questions, limit=args.prompts)
    models = [str(resolve_model(args.model))]
    if args.quantize:
        models.append(str(quantize(Path(models[0]), args.quantize)))
    results = []
    for model in models:
        res = bench_model(model, questions, args.threads, args.max_new_tokens)
        res["memory"] = {side: measure_memory(side, model, args.threads) for side in ("ours", "llama.cpp")}
        res["config"] = {"threads": args.threads, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
                         "n_ctx": N_CTX}
        print(report(res) + "\n", flush=True)
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

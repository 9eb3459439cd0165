"""What a decoding step costs as the context grows: our plain decoding against llama.cpp's on the
same GGUF and threads, in one process, per-token time (prefill excluded) after prompts of several
lengths, medians over repetitions.

    python benchmarks/context_cost.py -t 1 --contexts 50,400,800,1600 --reps 3

The prompts are one fixed paragraph repeated to the length asked for (through the model's chat
template, with a request to summarize it), so that only the context's length changes. Each step
reads the whole KV cache once (768 bytes per cell and layer on the default model: 38 MB a step at
1,600 cells); the difference between the rows is what attention over that cache costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from kangaroo_edge import KangarooLM, _native
from kangaroo_edge.bench.runner import LlamaCppPlain, OursSystem, _llama, machine_info

PARAGRAPH = ("The history of the bicycle spans more than two centuries, from the wooden draisine of 1817 "
             "to the carbon frames of today. Each step changed how people moved through their cities. ")


def prompt_of_length(lm: KangarooLM, n_tokens: int) -> list[int]:
    """The chat prompt with as many paragraphs as keep it at or under n_tokens (at least one)."""
    def build(k: int) -> list[int]:
        text = PARAGRAPH * k + "Summarize the text above."
        return lm.tokenize(lm.apply_chat_template([{"role": "user", "content": text}]))
    k = 1
    while len(build(k + 1)) <= n_tokens:
        k += 1
    return build(k)


def ms_per_token(system, prompt: list[int], n_new: int, reps: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(reps):
        run = system.run(prompt, n_new)
        n = run.n_tokens
        times.append(run.generation_seconds / max(run.n_tokens - 1, 1) * 1e3)
    return statistics.median(times), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="model path or known name (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--contexts", default="50,400,800,1600", help="prompt lengths in tokens, comma-separated")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per run")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()

    contexts = [int(c) for c in args.contexts.split(",")]
    n_ctx = max(contexts) + args.new_tokens + 64
    lm = KangarooLM(args.model, n_ctx=n_ctx, n_threads=args.threads, device="cpu")
    ours, llama = OursSystem(lm, speculative=False), LlamaCppPlain(_llama(str(lm.model_path), n_ctx, args.threads))
    info = machine_info()
    print(f"model {lm.model_path.name}, {args.threads} thread(s), CPU {info['cpu']}, kernels {_native.kernels.best_isa()}, "
          f"{args.new_tokens} new tokens, median of {args.reps}")
    print("\n| prompt tokens | ours ms/token | llama.cpp ms/token | llama.cpp / ours | tokens generated |")
    print("|---|---|---|---|---|")
    for c in contexts:
        prompt = prompt_of_length(lm, c)
        ms_ours, n = ms_per_token(ours, prompt, args.new_tokens, args.reps)
        ms_llama, _ = ms_per_token(llama, prompt, args.new_tokens, args.reps)
        print(f"| {len(prompt)} | {ms_ours:.2f} | {ms_llama:.2f} | {ms_llama / ms_ours:.2f}x | {n} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

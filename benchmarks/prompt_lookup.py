"""Prompt lookup where it should pay: answers that repeat their context.

The model is asked to repeat or quote a passage; plain decoding, Kangaroo with the controller's
prompt lookup and Kangaroo without it run alternately in one process, greedy, and each task
reports median generation speed (the three outputs are identical; asserted).

    python benchmarks/prompt_lookup.py -t 2 --reps 5 --max-new-tokens 96
"""

from __future__ import annotations

import argparse
import statistics

from kangaroo_edge import KangarooLM

PASSAGE = ("The red kangaroo is the largest of all kangaroos, the largest terrestrial mammal native to Australia, "
           "and the largest extant marsupial. It is found across mainland Australia, avoiding only the more fertile "
           "areas, such as the southern and eastern coasts. Males can stand almost two metres tall and weigh up to "
           "ninety kilograms; females are much smaller. Red kangaroos live in groups called mobs.")
TASKS = {"repeat the passage": "Repeat this text word for word:\n\n" + PASSAGE,
         "quote its first two sentences": "Quote the first two sentences of this text exactly:\n\n" + PASSAGE}
SYSTEMS = {"plain": dict(speculative=False), "lookup": dict(), "no lookup": dict(lookup=False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=96)
    args = p.parse_args()

    lm = KangarooLM(n_ctx=1024, n_threads=args.threads)
    print("| task | ours plain | Kangaroo with lookup | Kangaroo without lookup |")
    print("|---|---|---|---|")
    for task, text in TASKS.items():
        prompt = lm.apply_chat_template([{"role": "user", "content": text}])
        speeds: dict[str, list[float]] = {name: [] for name in SYSTEMS}
        outputs: dict[str, list[int]] = {}
        for _ in range(args.reps):
            for name, kwargs in SYSTEMS.items():
                lm.reset()
                r = lm.generate(prompt, args.max_new_tokens, **kwargs)
                speeds[name].append(r.stats.predicted_per_second)
                outputs[name] = r.token_ids
        assert outputs["lookup"] == outputs["plain"] == outputs["no lookup"], task
        m = {name: statistics.median(v) for name, v in speeds.items()}
        print(f"| {task} | {m['plain']:.1f} tok/s | {m['lookup']:.1f} tok/s ({m['lookup'] / m['plain']:.2f}x) "
              f"| {m['no lookup']:.1f} tok/s ({m['no lookup'] / m['plain']:.2f}x) |")


if __name__ == "__main__":
    main()

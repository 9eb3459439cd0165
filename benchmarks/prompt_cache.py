"""The server's prompt cache on two interleaved conversations: how much of each prompt is found
cached (`usage.prompt_tokens_details.cached_tokens`) and the prompt time it saves, with the cache
of several conversations (--cache-ram, the default) and without it (--cache-ram 0: only the last
sequence's prefix is reused).

The pattern is a chat front-end's with two users (or two tabs): turn 1 of A, turn 1 of B, a title
request for B (Open WebUI sends one after a first turn), turn 2 of A, turn 2 of B, ... Each turn
sends the whole conversation so far, as chat clients do. Greedy, so the two servers' answers are
compared too.

    python benchmarks/prompt_cache.py -t 1 --turns 6
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from typing import Optional

from serve_load import start_server

CONVERSATIONS = {
    "A": ["I want to start running. How should I begin?", "How many times a week should I run?",
          "What should I eat before a run?", "How do I avoid knee pain?", "What shoes should I buy?",
          "How do I know I am improving?", "Should I run in the rain?", "How long until I can run 5 km?"],
    "B": ["Explain what a binary search is.", "Write it in Python.", "What is its complexity?",
          "When is it a bad choice?", "How does it differ from a hash lookup?", "Give a real use case.",
          "Can it work on linked lists?", "How do I test it?"],
}
TITLE_PROMPT = "Create a concise, 3-5 word title for this chat:\n\n{}"


def post(conn: http.client.HTTPConnection, messages: list[dict], max_tokens: int) -> dict:
    body = json.dumps({"messages": messages, "max_tokens": max_tokens, "temperature": 0}).encode()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data}")
    return data


def run(args: argparse.Namespace, cache_ram: str) -> dict:
    proc, port = start_server(args, "--cache-ram", cache_ram, "--parallel", "1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    history: dict[str, list[dict]] = {name: [] for name in CONVERSATIONS}
    rows, answers = [], []
    try:
        for turn in range(args.turns):
            for name, questions in CONVERSATIONS.items():
                history[name].append({"role": "user", "content": questions[turn % len(questions)]})
                r = post(conn, history[name], args.max_tokens)
                answer = r["choices"][0]["message"]["content"]
                history[name].append({"role": "assistant", "content": answer})
                rows.append((f"{name}{turn + 1}", r))
                answers.append(answer)
                if turn == 0:  # the front-end names the new chat
                    title = post(conn, [{"role": "user", "content": TITLE_PROMPT.format(questions[0])}], 12)
                    rows.append((f"title {name}", title))
    finally:
        conn.close()
        proc.terminate()
        proc.wait(60)
    turns = [r for label, r in rows if not label.startswith("title")]
    prompt = sum(r["usage"]["prompt_tokens"] for r in turns)
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in turns)
    return {"cache_ram": cache_ram, "rows": [(label, r["usage"], r["timings"]["prompt_ms"]) for label, r in rows],
            "prompt_tokens": prompt, "cached_tokens": cached, "hit_rate": cached / prompt,
            "prompt_ms": sum(r["timings"]["prompt_ms"] for r in turns), "answers": answers}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="GGUF path or known name (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("--turns", type=int, default=6, help="user turns per conversation (default 6)")
    p.add_argument("--max-tokens", type=int, default=96, help="max_tokens of each answer (default 96)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    results = [run(args, "8192"), run(args, "0")]
    print(f"two conversations x {args.turns} turns, interleaved, a title request after each first turn; "
          f"greedy, max_tokens {args.max_tokens}, {args.threads} thread(s)")
    print(f"{'turn':>8} " + " ".join(f"{'cached/prompt (--cache-ram ' + r['cache_ram'] + ')':>34}" for r in results))
    for i, (label, *_ ) in enumerate(results[0]["rows"]):
        cells = [f"{r['rows'][i][1]['prompt_tokens_details']['cached_tokens']:>5}/{r['rows'][i][1]['prompt_tokens']:<5} "
                 f"{r['rows'][i][2]:>8.1f} ms" for r in results]
        print(f"{label:>8} " + " ".join(f"{c:>34}" for c in cells))
    for r in results:
        print(f"--cache-ram {r['cache_ram']:>4}: conversation turns {r['cached_tokens']}/{r['prompt_tokens']} prompt tokens "
              f"cached ({100 * r['hit_rate']:.1f}%), prompt time {r['prompt_ms'] / 1e3:.2f} s")
    same = sum(a == b for a, b in zip(results[0]["answers"], results[1]["answers"]))
    print(f"same answers: {same}/{len(results[0]['answers'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Load on `kangaroo-edge serve`: requests/s, p50/p95 latency and generated tokens/s at 1, 4 and 16
concurrent clients, for each --parallel (requests decoded together), and the server's overhead
against calling KangarooLM directly in-process.

Loopback only, bounded: a fixed number of requests per level (--requests) and a time limit per
level (--max-seconds: no new request starts after it). The overhead is measured on pairs: each
request runs on KangarooLM in this process, then through the server (a subprocess with the same
model and threads; the two never compute at the same time), so the machine's load drifts alike
for both. Besides the latency difference it reports each side's time outside the engine (latency
minus the engine's own prompt + generation seconds), which the load on the cores barely touches.
Greedy, so the outputs are compared too.

    python benchmarks/serve_load.py -t 1 --requests 32 --max-tokens 32 --parallel 1,4
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Optional

from kangaroo_edge import KangarooLM

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Explain what a noun is.",
    "Why is the sky blue?", "Give me a synonym for happy.", "What is 12 times 12?",
    "Write a haiku about the sea.", "What does a bee make?", "How many days are in a leap year?",
    "What is the largest planet?", "Name a famous painter.", "What is water made of?",
    "Describe a cat in one sentence.", "What language is spoken in Brazil?", "What is a prime number?",
    "Suggest a name for a dog.",
]
READY = re.compile(r"kangaroo-edge serve: \S+ at http://127\.0\.0\.1:(\d+)/v1")
START_TIMEOUT_S = 120


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


# ---- the server ---------------------------------------------------------------------------

def start_server(args: argparse.Namespace, *flags: str) -> tuple[subprocess.Popen, int]:
    """`kangaroo-edge serve` with the model, threads and context of `args` (-m, -t, -c) and `flags`;
    returns the process and its port once it listens."""
    cmd = [sys.executable, "-m", "kangaroo_edge.cli.main", "serve", "--host", "127.0.0.1", "--port", "0",
           "-t", str(args.threads), "-c", str(args.ctx_size), "--log-level", "warning", *flags]
    if args.model:
        cmd += ["-m", args.model]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in proc.stderr:
        m = READY.search(line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, int(m.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("the server did not start")


def run_pairs(lm: KangarooLM, port: int, args: argparse.Namespace) -> dict:
    """Each request on KangarooLM directly, then on the server (one client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    rows = []
    try:
        for i in range(args.requests):
            t0 = time.perf_counter()
            out = lm.create_chat_completion(messages(i), max_tokens=args.max_tokens, temperature=0.0)
            direct_s = time.perf_counter() - t0
            engine_s = (out["timings"]["prompt_ms"] + out["timings"]["predicted_ms"]) / 1e3
            server_s, _, text, timings = post_chat(conn, i, args.max_tokens)
            rows.append({"direct_s": direct_s, "server_s": server_s, "direct_outside_engine_s": direct_s - engine_s,
                         "server_outside_engine_s": server_s - (timings["prompt_ms"] + timings["predicted_ms"]) / 1e3,
                         "same_text": text == out["choices"][0]["message"]["content"]})
    finally:
        conn.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "same_text"}
    return {"pairs": len(rows), "same_text": sum(r["same_text"] for r in rows),
            "median_difference_s": statistics.median(r["server_s"] - r["direct_s"] for r in rows),
            "median_ratio": statistics.median(r["server_s"] / r["direct_s"] for r in rows), **{f"median_{k}": v for k, v in med.items()}}


def health_round_trip_s(port: int, n: int = 50) -> float:
    """The HTTP floor: median GET /health round trip on a keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return statistics.median(times)


def post_chat(conn: http.client.HTTPConnection, i: int, max_tokens: int) -> tuple[float, int, str, dict]:
    body = json.dumps({"messages": messages(i), "max_tokens": max_tokens, "temperature": 0}).encode()
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    latency = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"request {i}: HTTP {resp.status}: {data}")
    return latency, data["usage"]["completion_tokens"], data["choices"][0]["message"]["content"], data["timings"]


def run_level(port: int, clients: int, parallel: int, args: argparse.Namespace) -> dict:
    """`clients` threads, each with its own keep-alive connection, share the level's requests."""
    next_index = iter(range(args.requests))
    lock = threading.Lock()
    latencies, texts, tokens = [], {}, [0]
    deadline = time.perf_counter() + args.max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.max_seconds + 600)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                latency, n, text, _ = post_chat(conn, i, args.max_tokens)
                with lock:
                    latencies.append(latency)
                    tokens[0] += n
                    texts[i] = text
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return _summary(clients, latencies, tokens[0], wall) | {"parallel": parallel, "texts": texts}


def _summary(clients: int, latencies: list[float], tokens: int, wall: float) -> dict:
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "seconds": wall,
            "requests_per_s": len(lat) / wall, "p50_s": statistics.median(lat),
            "p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))], "tokens": tokens,
            "tokens_per_s": tokens / wall}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="GGUF path or known name (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-c", "--ctx-size", type=int, default=2048)
    p.add_argument("--requests", type=int, default=32, help="requests per level (default 32)")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request (default 32)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16],
                   help="client counts, comma-separated (default 1,4,16)")
    p.add_argument("--parallel", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4],
                   help="the server's --parallel values, comma-separated, each a server of its own (default 1,4)")
    p.add_argument("--max-seconds", type=float, default=300, help="per level: no request starts after this")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    levels, pairs = [], None
    for parallel in args.parallel:
        proc, port = start_server(args, "--parallel", str(parallel), "--max-queue", str(max(args.concurrency) + 1))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            post_chat(conn, 0, 4)  # warm-up
            conn.close()
            if pairs is None:  # the overhead, on the first server
                lm = KangarooLM(args.model, n_ctx=args.ctx_size, n_threads=args.threads, device="cpu")
                try:
                    lm.create_chat_completion(messages(0), max_tokens=4, temperature=0.0)
                    pairs = run_pairs(lm, port, args)
                finally:
                    lm.close()
                pairs["median_health_round_trip_s"] = health_round_trip_s(port)
            levels += [run_level(port, c, parallel, args) for c in args.concurrency]
        finally:
            proc.terminate()
            proc.wait(60)

    print(f"{args.requests} chat requests per level, max_tokens {args.max_tokens}, greedy, {args.threads} thread(s)")
    print(f"{'parallel':>8} {'clients':>7} {'req':>4} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'tok/s':>7} {'same text':>9}")
    reference = levels[0]["texts"]
    for r in levels:
        same = sum(text == reference.get(i) for i, text in r["texts"].items())
        print(f"{r['parallel']:>8} {r['clients']:>7} {r['requests']:>4} {r['requests_per_s']:>7.2f} {r['p50_s']:>7.3f} "
              f"{r['p95_s']:>7.3f} {r['tokens_per_s']:>7.1f} {same:>4}/{r['requests']}")
    print(f"server vs KangarooLM directly, {pairs['pairs']} paired requests (same text {pairs['same_text']}/{pairs['pairs']}): "
          f"median latency {pairs['median_direct_s'] * 1e3:.0f} ms direct, {pairs['median_server_s'] * 1e3:.0f} ms server; "
          f"median difference {pairs['median_difference_s'] * 1e3:+.1f} ms ({pairs['median_ratio']:.3f}x); time outside the "
          f"engine {pairs['median_direct_outside_engine_s'] * 1e3:.1f} ms direct, "
          f"{pairs['median_server_outside_engine_s'] * 1e3:.1f} ms server; GET /health round trip "
          f"{pairs['median_health_round_trip_s'] * 1e3:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "pairs": pairs, "levels": levels}, f, indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""`kangaroo-edge serve --parallel`: requests that arrive together are decoded together (one weight
pass for all of them) and each gets the answer it gets alone: greedy, sampled with a seed, cut by
a stop string or by max_tokens. A request with a grammar waits and runs alone; a client that
leaves a batch leaves the others unharmed; a request alone keeps speculation.

Requests are made to arrive together by queueing them behind a long streamed request: the worker
finds them waiting when it ends."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from conftest import TEST_N_CTX
from test_server import COUNTING, REQUEST_TIMEOUT, Server, _open_stream, _read_events, _wait_until

PARALLEL = 3
# Each request as the OpenAI client sends it: greedy, sampled with a seed, a stop string, a short budget
REQUESTS = [
    {"messages": [{"role": "user", "content": "Write a short poem about a lighthouse."}], "max_tokens": 40,
     "temperature": 0},
    {"messages": [{"role": "user", "content": "Give me three tips for learning to cook."}], "max_tokens": 40,
     "temperature": 0.8, "seed": 11},
    {"messages": [{"role": "user", "content": "Describe the water cycle."}], "max_tokens": 60, "temperature": 0,
     "stop": [","]},
    {"messages": [{"role": "user", "content": "What is a prime number?"}], "max_tokens": 7, "temperature": 0},
]
BATCHED = "decoded in a batch of parallel requests: plain decoding"


@pytest.fixture(scope="module")
def server():
    s = Server("--parallel", str(PARALLEL), "--log-level", "info")
    yield s
    s.stop()


def n_waiting(s: Server) -> int:
    return json.loads(s.request("GET", "/health")[2])["waiting"]


def ask_streamed(s: Server, request: dict, arrivals: list) -> dict:
    """Streams a chat completion; records (time, id) of each content chunk in `arrivals`; returns
    the text, finish reason and the server's timings."""
    text, finish, timings = [], None, None
    key = id(request)
    for chunk in s.client().chat.completions.create(model=s.model_id, stream=True, **request):
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            arrivals.append((time.monotonic(), key))
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        timings = (chunk.model_extra or {}).get("timings") or timings
    return {"text": "".join(text), "finish": finish, "timings": timings}


def behind_a_long_request(s: Server, requests: list[dict], arrivals: list) -> list:
    """Sends `requests` at once while a long request holds the model, then lets it go: the worker
    finds them all waiting. Returns their results in order."""
    blocker, reader = _open_stream(s.port, {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0})
    _read_events(reader, 1)
    results: list = [None] * len(requests)

    def run(i: int) -> None:
        try:
            results[i] = ask_streamed(s, requests[i], arrivals)
        except Exception as e:  # recorded: the assertions show it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    _wait_until(lambda: n_waiting(s) == len(requests))
    reader.close()
    blocker.close()  # ends the long request: the waiting ones start
    for t in threads:
        t.join(REQUEST_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    return results


def switches(arrivals: list) -> int:
    """How often consecutive chunks (in time order) belong to different requests."""
    keys = [k for _, k in sorted(arrivals, key=lambda a: a[0])]
    return sum(a != b for a, b in zip(keys, keys[1:]))


def test_requests_together_get_what_each_gets_alone(server):
    alone = [ask_streamed(server, r, []) for r in REQUESTS[:PARALLEL]]
    for got in alone:  # alone, a request is speculative as before
        assert got["timings"]["speculative_fallback"] != BATCHED
    arrivals: list = []
    together = behind_a_long_request(server, REQUESTS[:PARALLEL], arrivals)
    assert together == [{**a, "timings": t["timings"]} for a, t in zip(alone, together)], together
    for t in together:
        assert t["timings"]["speculative_fallback"] == BATCHED and t["timings"]["draft_n"] == 0
    assert together[2]["finish"] == "stop" and "," not in together[2]["text"]
    # interleaved: one request alone after another would switch about PARALLEL - 1 times
    assert switches(arrivals) >= 10, sorted(arrivals)
    server.wait_for_count(r"in a batch", PARALLEL, timeout=10)
    assert json.loads(server.request("GET", "/props")[2])["total_slots"] == PARALLEL


def test_more_requests_than_slots_join_as_slots_free_up(server):
    """Four requests, three slots: the short one leaves early and the fourth takes its slot."""
    order = [REQUESTS[3], REQUESTS[0], REQUESTS[2], REQUESTS[1]]
    alone = [ask_streamed(server, r, []) for r in order]
    together = behind_a_long_request(server, order, [])
    assert [t["text"] for t in together] == [a["text"] for a in alone]
    assert [t["finish"] for t in together] == [a["finish"] for a in alone]
    assert all(t["timings"]["speculative_fallback"] == BATCHED for t in together)


def test_a_request_with_a_grammar_runs_alone_and_the_rest_together(server):
    structured = {"messages": [{"role": "user", "content": "Give a JSON object with a name and an age."}],
                  "max_tokens": 40, "temperature": 0, "response_format": {"type": "json_object"}}
    requests = [REQUESTS[0], structured, REQUESTS[3]]
    alone = [ask_streamed(server, r, []) for r in requests]
    together = behind_a_long_request(server, requests, [])
    assert [t["text"] for t in together] == [a["text"] for a in alone]
    json.loads(together[1]["text"])
    assert together[1]["timings"]["speculative_fallback"] != BATCHED  # the grammar's request ran alone


def test_a_client_leaving_a_batch_leaves_the_others_whole(server):
    kept = REQUESTS[0]
    alone = ask_streamed(server, kept, [])
    blocker, reader = _open_stream(server.port, {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0})
    _read_events(reader, 1)
    leaver, leaver_reader = _open_stream(server.port, {"prompt": COUNTING, "max_tokens": 500, "temperature": 0})
    result: list = []
    t = threading.Thread(target=lambda: result.append(ask_streamed(server, kept, [])))
    t.start()
    _wait_until(lambda: n_waiting(server) == 2)
    reader.close()
    blocker.close()
    _read_events(leaver_reader, 3)  # in the batch now
    leaver_reader.close()
    leaver.close()
    t.join(REQUEST_TIMEOUT)
    assert result and result[0]["text"] == alone["text"]
    server.wait_for(re.compile(r"completion request stopped after \d+ tokens: the client closed"), REQUEST_TIMEOUT)
    assert server.request("GET", "/health")[0] == 200


def test_a_prompt_as_long_as_the_context_runs_alone(server):
    """A batch's sequence needs room for a token after the prompt; a prompt of exactly n_ctx
    tokens has none, so it waits for the batch and runs alone, with the answer it gets alone."""
    full = {"prompt": [(i * 7) % 5000 + 100 for i in range(TEST_N_CTX)], "max_tokens": 4, "temperature": 0}
    alone = server.client().completions.create(model=server.model_id, **full)
    blocker, reader = _open_stream(server.port, {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0})
    _read_events(reader, 1)
    results: list = []
    threads = [threading.Thread(target=lambda r=r: results.append(
        server.client().completions.create(model=server.model_id, **r))) for r in (full, {**full, "prompt": COUNTING})]
    for t in threads:
        t.start()
        _wait_until(lambda: n_waiting(server) == threads.index(t) + 1)
    reader.close()
    blocker.close()
    for t in threads:
        t.join(REQUEST_TIMEOUT)
    got = next(r for r in results if r.usage.prompt_tokens == TEST_N_CTX)
    assert (got.choices[0].text, got.choices[0].finish_reason) == (alone.choices[0].text, alone.choices[0].finish_reason)
    assert got.usage.completion_tokens == alone.usage.completion_tokens == 1

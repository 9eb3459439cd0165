"""`kangaroo-edge serve` end to end: the real server in a subprocess on a free loopback port
(--port 0: the OS picks one, the server prints it), driven by the real `openai` client and by raw
HTTP. Greedy answers are compared with KangarooLM's own, in this process."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Optional

import openai
import pytest

from conftest import REPO, TEST_N_CTX, TEST_THREADS

START_TIMEOUT = 120  # seconds: loading the model on a busy machine
REQUEST_TIMEOUT = 300
READY = re.compile(r"kangaroo-edge serve: (\S+) at (http://127\.0\.0\.1:(\d+))/v1")
MAX_REQUEST_BYTES = 64 * 1024
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# a completion the model continues for as long as it is allowed to (no end-of-generation token)
COUNTING = "Count from 1 to 500: 1, 2, 3, 4, 5, 6, 7, 8,"


class Server:
    """`kangaroo-edge serve` in a subprocess; its stderr is collected in a thread."""

    def __init__(self, *flags: str, env: Optional[dict] = None):
        cmd = [sys.executable, "-m", "kangaroo_edge.cli.main", "serve", "--port", "0", "-t", str(TEST_THREADS),
               "-c", str(TEST_N_CTX), "--max-request-bytes", str(MAX_REQUEST_BYTES), *flags]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        match = self.wait_for(READY, START_TIMEOUT)
        self.model_id, self.url, self.port = match.group(1), match.group(2), int(match.group(3))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            match = pattern.search(line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern.pattern!r}; server log:\n{''.join(self.log)[-4000:]}")

    def wait_for_count(self, pattern: str, n: int, timeout: float) -> None:
        """Until the log holds n matches of pattern. A request's log line follows its response's
        last chunk, so a client can hold every answer before the server has logged them."""
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, "".join(self.log))) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} lines matching {pattern!r}; server log:\n{''.join(self.log)[-4000:]}")
            time.sleep(0.05)

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=REQUEST_TIMEOUT)

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict] = None,
                raw: Optional[bytes] = None) -> tuple[int, dict, bytes]:
        """Raw HTTP: (status, headers, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            headers = {"Content-Type": "application/json", **(headers or {})}  # a None value leaves a header out
            conn.request(method, path, body=data, headers={k: v for k, v in headers.items() if v is not None})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
            self._reader.join(timeout)  # the log's last lines may still be in the pipe
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the server did not stop on signal {sig}; log:\n{''.join(self.log)[-4000:]}")


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def sse_data(body: bytes) -> list[str]:
    """The data of each server-sent event; checks the framing (`data: ...` lines, blank line after each)."""
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    events = text[:-2].split("\n\n")
    for e in events:
        assert e.startswith("data: ") and "\n" not in e, e
    return [e[len("data: "):] for e in events]


def error_of(status_headers_body: tuple[int, dict, bytes]) -> dict:
    """The OpenAI-shaped error in a response; checks its shape."""
    status, headers, body = status_headers_body
    assert headers["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str) and err["message"]
    return err


# ---- endpoints and shapes ----------------------------------------------------------------

def test_serve_defaults_are_llama_cpp_s():
    from kangaroo_edge.cli.main import build_parser

    args = build_parser("serve").parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.cors_origin) == ("127.0.0.1", 8080, None, [])
    assert (args.temp, args.top_k, args.top_p, args.min_p) == (0.8, 40, 0.95, 0.05)



def test_health_and_models(server, client):
    status, _, body = server.request("GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    models = client.models.list().data
    assert [m.id for m in models] == [server.model_id] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert client.models.retrieve(server.model_id).id == server.model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_chat_greedy_equals_the_library(server, client, smollm):
    smollm.reset()
    want = smollm.create_chat_completion(QUESTION, max_tokens=32, temperature=0.0)
    got = client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=32, temperature=0)
    assert got.object == "chat.completion" and got.model == server.model_id and len(got.choices) == 1
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert got.usage.completion_tokens == want["usage"]["completion_tokens"]
    timings = got.model_extra["timings"]
    assert timings["predicted_n"] == got.usage.completion_tokens
    assert timings["prompt_n"] + timings["cache_n"] == got.usage.prompt_tokens
    assert timings["speculative"] is True and {"draft_n", "draft_n_accepted", "mean_accepted"} <= set(timings)


def test_chat_stream_equals_the_whole_answer(server, client):
    whole = client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=32, temperature=0)
    chunks = list(client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=32,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_greedy_equals_the_library(server, client, smollm):
    smollm.reset()
    prompt = "The kangaroo is an animal that"
    want = smollm.create_completion(prompt, max_tokens=24, temperature=0.0)["choices"][0]["text"]
    got = client.completions.create(model=server.model_id, prompt=prompt, max_tokens=24, temperature=0)
    assert got.object == "text_completion" and got.choices[0].text == want
    streamed = client.completions.create(model=server.model_id, prompt=prompt, max_tokens=24, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want
    ids = smollm.tokenize(prompt)
    by_ids = client.completions.create(model=server.model_id, prompt=ids, max_tokens=24, temperature=0)
    assert by_ids.choices[0].text == want


def test_penalties_through_the_openai_client(server, client, smollm):
    """OpenAI's presence/frequency_penalty, llama.cpp's repeat_penalty/repeat_last_n and Ollama's
    options reach the engine: greedy answers equal the library's with the same penalties."""
    penalties = dict(repeat_penalty=1.3, repeat_last_n=32, presence_penalty=0.5, frequency_penalty=0.5)
    smollm.reset()
    plain = smollm.create_completion(COUNTING, max_tokens=32, temperature=0.0)["choices"][0]["text"]
    smollm.reset()
    want = smollm.create_completion(COUNTING, max_tokens=32, temperature=0.0, **penalties)["choices"][0]["text"]
    assert want != plain
    got = client.completions.create(model=server.model_id, prompt=COUNTING, max_tokens=32, temperature=0,
                                    presence_penalty=0.5, frequency_penalty=0.5,
                                    extra_body={"repeat_penalty": 1.3, "repeat_last_n": 32})
    assert got.choices[0].text == want
    smollm.reset()
    want = smollm.create_chat_completion(QUESTION, max_tokens=32, temperature=0.0, repeat_penalty=1.5)
    got = client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=32, temperature=0,
                                         extra_body={"options": {"repeat_penalty": 1.5, "num_ctx": 4096}})
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]


def test_readme_snippet_works_as_written(server, capsys):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## OpenAI-compatible server"):]
    snippet = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    assert "http://127.0.0.1:8080/v1" in snippet  # the default address; here, the test server's
    exec(compile(snippet.replace("http://127.0.0.1:8080/v1", f"{server.url}/v1"), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "predicted_per_second" in printed and len(printed.splitlines()) >= 3


def test_raw_sse_framing(server):
    status, headers, body = server.request("POST", "/v1/chat/completions",
                                           {"messages": QUESTION, "max_tokens": 8, "temperature": 0, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    data = sse_data(body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "timings" in chunks[-1]
    assert "usage" not in chunks[0]  # only with stream_options.include_usage


def test_extensions_and_stop(server, client):
    out = client.completions.create(model=server.model_id, prompt=COUNTING, max_tokens=40, temperature=0,
                                    stop=[" 12,"], extra_body={"top_k": 1, "min_p": 0.1, "tau": 0.0, "gamma": 3,
                                                               "lookup": False})
    assert out.choices[0].finish_reason == "stop" and out.choices[0].text == " 9, 10, 11,"
    t = out.model_extra["timings"]
    assert t["tau"] == 0.0 and t["gamma"] == 3 and t["cycles"] >= 1  # tau 0: every step drafts
    plain = client.completions.create(model=server.model_id, prompt=COUNTING, max_tokens=8, temperature=0,
                                      extra_body={"speculative": False})
    assert plain.model_extra["timings"]["speculative"] is False


def test_sampling_with_a_seed_is_reproducible(server, client):
    # Reproducible with a fixed tau: the auto controller's drafting decisions depend on measured
    # timings, and they change how random numbers are drawn. The second request reuses the
    # cached prompt (its last prompt batch is evaluated again, as the first request evaluated it).
    def sample() -> str:
        return client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=16, seed=1234,
                                              extra_body={"tau": 0.5}).choices[0].message.content
    assert sample() == sample()


def test_consecutive_turns_reuse_the_cached_prefix(server, client):
    turn = [{"role": "user", "content": "Name a large animal that lives in Australia."}]
    first = client.chat.completions.create(model=server.model_id, messages=turn, max_tokens=24, temperature=0)
    turn += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "How fast can it run?"}]
    second = client.chat.completions.create(model=server.model_id, messages=turn, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens
    assert second.model_extra["timings"]["prompt_n"] == second.usage.prompt_tokens - cached
    fresh = client.chat.completions.create(model=server.model_id, messages=turn, max_tokens=8, temperature=0,
                                           extra_body={"cache_prompt": False})
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0


def test_a_conversation_resumed_after_other_requests_reuses_its_prefix(server, client):
    """A chat front-end's title request between two turns does not cost the conversation its
    cache (--cache-ram): the second turn evaluates only its new tokens."""
    turn = [{"role": "user", "content": "Name a large animal that lives in Africa, and describe it."}]
    first = client.chat.completions.create(model=server.model_id, messages=turn, max_tokens=24, temperature=0)
    title = [{"role": "user", "content": "Write a three-word title for a chat about animals."}]
    other = client.chat.completions.create(model=server.model_id, messages=title, max_tokens=6, temperature=0)
    assert other.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens
    turn += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "What does it eat?"}]
    second = client.chat.completions.create(model=server.model_id, messages=turn, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_a_repeated_request_gets_the_answer_a_fresh_one_gets(server, client):
    # the whole prompt is cached the second time; a lone last token would take ggml's one-row
    # kernels, which round differently (on this CPU "Name a color." then answered otherwise)
    def ask(**extra) -> str:
        return client.chat.completions.create(model=server.model_id, max_tokens=6, temperature=0, extra_body=extra,
                                              messages=[{"role": "user", "content": q}]).choices[0].message.content
    for q in ("Name a color.", "What is 2 + 2?"):
        fresh = ask(cache_prompt=False)
        assert ask() == fresh and ask() == fresh


# ---- bad requests --------------------------------------------------------------------------

CHAT_OK = {"messages": QUESTION, "max_tokens": 4}
BAD_CHAT = [  # (body, status, param, code)
    ({"messages": "hi"}, 400, "messages", "invalid_type"),
    ({}, 400, "messages", "missing_required_parameter"),
    ({"messages": []}, 400, "messages", "invalid_value"),
    ({"messages": [{"role": "function", "content": "x"}]}, 400, "messages[0].role", "unsupported_value"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages[0].content[0].type", "unsupported_value"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, 400, None, "invalid_value"),  # a lone surrogate
    ({**CHAT_OK, "temperature": "hot"}, 400, "temperature", "invalid_type"),
    ({**CHAT_OK, "temperature": 3}, 400, "temperature", "invalid_value"),
    ({**CHAT_OK, "top_p": 0}, 400, "top_p", "invalid_value"),
    ({**CHAT_OK, "min_p": 2}, 400, "min_p", "invalid_value"),
    ({**CHAT_OK, "top_k": -1}, 400, "top_k", "invalid_value"),
    ({**CHAT_OK, "top_k": 1 << 40}, 400, "top_k", "invalid_value"),
    ({**CHAT_OK, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ({**CHAT_OK, "max_tokens": 1.5}, 400, "max_tokens", "invalid_type"),
    ({**CHAT_OK, "max_completion_tokens": True}, 400, "max_completion_tokens", "invalid_type"),
    ({**CHAT_OK, "seed": -5}, 400, "seed", "invalid_value"),
    ({**CHAT_OK, "stream": "yes"}, 400, "stream", "invalid_type"),
    ({**CHAT_OK, "stream_options": {"include_usage": True}}, 400, "stream_options", "invalid_value"),
    ({**CHAT_OK, "stop": ["a", 3]}, 400, "stop", "invalid_type"),
    ({**CHAT_OK, "tau": 1.5}, 400, "tau", "invalid_value"),
    ({**CHAT_OK, "gamma": 0}, 400, "gamma", "invalid_value"),
    ({**CHAT_OK, "speculative": 1}, 400, "speculative", "invalid_type"),
    ({**CHAT_OK, "n": 2}, 400, "n", "unsupported_value"),
    ({**CHAT_OK, "logprobs": True}, 400, "logprobs", "unsupported_value"),
    ({**CHAT_OK, "tools": [{"type": "retrieval"}]}, 400, "tools[0]", "invalid_value"),
    ({**CHAT_OK, "tool_choice": "sometimes"}, 400, "tool_choice", "invalid_value"),
    ({**CHAT_OK, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice", "invalid_value"),
    # penalties: OpenAI's range for presence/frequency, llama.cpp's rules, Ollama's options
    ({**CHAT_OK, "presence_penalty": 2.5}, 400, "presence_penalty", "invalid_value"),
    ({**CHAT_OK, "frequency_penalty": "high"}, 400, "frequency_penalty", "invalid_type"),
    ({**CHAT_OK, "repeat_penalty": 0}, 400, "repeat_penalty", "invalid_value"),
    ({**CHAT_OK, "repeat_last_n": -2}, 400, "repeat_last_n", "invalid_value"),
    ({**CHAT_OK, "repetition_penalty": 1.1}, 400, "repetition_penalty", "unsupported_value"),
    ({**CHAT_OK, "repeat_penalty": 1.1, "penalize_nl": False}, 400, "penalize_nl", "unsupported_value"),
    ({**CHAT_OK, "options": {"repeat_penalty": -1}}, 400, "options.repeat_penalty", "invalid_value"),
    ({**CHAT_OK, "options": {"mirostat": 2}}, 400, "options.mirostat", "unsupported_value"),
    ({**CHAT_OK, "options": {"top_k": 5}, "top_k": 5}, 400, "options.top_k", "invalid_value"),
    ({**CHAT_OK, "options": [1]}, 400, "options", "invalid_type"),
    # structured output that cannot be compiled: the grammar engine's reason, naming the field
    ({**CHAT_OK, "grammar": "root ::= undefined_rule"}, 400, "grammar", "invalid_value"),
    ({**CHAT_OK, "json_schema": {"type": 5}}, 400, "json_schema", "invalid_value"),
    ({**CHAT_OK, "json_schema": {"type": "object"}, "grammar": "root ::= \"a\""}, 400, "grammar", "invalid_value"),
    # llama.cpp's fields that change the output and are not implemented: refused, never ignored
    ({**CHAT_OK, "ignore_eos": True}, 400, "ignore_eos", "unsupported_value"),
    ({**CHAT_OK, "response_format": {"type": "yaml"}}, 400, "response_format", "invalid_value"),
    ({**CHAT_OK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     400, "response_format", "invalid_value"),
    ({**CHAT_OK, "n_predict": 0}, 400, "n_predict", "invalid_value"),
    ({**CHAT_OK, "model": 7}, 400, "model", "invalid_type"),
]


BAD_COMPLETION = [
    ({"max_tokens": 4}, 400, "prompt", "missing_required_parameter"),
    ({"prompt": 7}, 400, "prompt", "invalid_type"),
    ({"prompt": ["one", "two"]}, 400, "prompt", "unsupported_value"),
    ({"prompt": [1, 10 ** 9]}, 400, None, "invalid_value"),  # not a token id: the model says so
    ({"prompt": "x", "echo": True}, 400, "echo", "unsupported_value"),
    ({"prompt": "x", "best_of": 2}, 400, "best_of", "unsupported_value"),
    ({"prompt": "x", "typical_p": 0.5}, 400, "typical_p", "unsupported_value"),
    ({"prompt": "x", "n_predict": -2}, 400, "n_predict", "invalid_value"),
]


BAD_REQUESTS = [("/v1/chat/completions", *b) for b in BAD_CHAT] + [("/v1/completions", *b) for b in BAD_COMPLETION]


@pytest.mark.parametrize("path,body,status,param,code", BAD_REQUESTS,
                         ids=[f"{r[0].split('/v1/')[-1]}-{r[3]}-{r[4]}" for r in BAD_REQUESTS])
def test_bad_request(server, path, body, status, param, code):
    res = server.request("POST", path, body)
    assert res[0] == status, res
    err = error_of(res)
    assert (err["param"], err["code"]) == (param, code), err


@pytest.mark.parametrize("raw", [b'{"messages": [', b"[1, 2]", b'{"messages": [], "temperature": NaN}', b"",
                                 b"\xff\xfe{"], ids=["truncated", "array", "nan", "empty", "not-utf8"])
def test_malformed_json(server, raw):
    res = server.request("POST", "/v1/chat/completions", raw=raw)
    assert res[0] == 400, res
    assert error_of(res)["type"] == "invalid_request_error"


def test_prompt_longer_than_the_context(server, client):
    text = "kangaroo " * (TEST_N_CTX + 100)
    res = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": text}]})
    assert res[0] == 400
    err = error_of(res)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    n_prompt = int(re.search(r"the prompt has (\d+) tokens", err["message"]).group(1))
    assert n_prompt > TEST_N_CTX and str(TEST_N_CTX) in err["message"]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=server.model_id, prompt=text, max_tokens=4)


def test_body_over_the_limit(server):
    body = {"messages": [{"role": "user", "content": "x" * MAX_REQUEST_BYTES}]}
    res = server.request("POST", "/v1/chat/completions", body)
    assert res[0] == 413 and error_of(res)["code"] == "request_too_large"


def test_unknown_path_and_method(server):
    res = server.request("GET", "/v1/engines")
    assert res[0] == 404 and error_of(res)["code"] == "not_found"
    res = server.request("GET", "/v1/chat/completions")
    assert res[0] == 405 and error_of(res)["message"]


def test_openai_client_errors(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model_id, messages=QUESTION, n=2)
    assert e.value.status_code == 400 and e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model_id, messages=QUESTION, extra_body={"grammar": "root ::= x"})
    assert e.value.body["param"] == "grammar" and "grammar" in e.value.body["message"]


def test_neutral_values_of_unimplemented_fields_are_accepted(server):
    neutral = {"n": 1, "repetition_penalty": 1.0, "penalize_nl": False, "ignore_eos": False, "grammar": "",
               "response_format": {"type": "text"}, "tools": [], "logprobs": False, "user": "someone"}
    status, _, body = server.request("POST", "/v1/chat/completions", {**CHAT_OK, **neutral})
    assert status == 200, body


def test_n_predict_is_max_tokens(server, client):
    out = client.completions.create(model=server.model_id, prompt=COUNTING, temperature=0,
                                    extra_body={"n_predict": 5})
    assert out.usage.completion_tokens == 5 and out.choices[0].finish_reason == "length"
    out = client.completions.create(model=server.model_id, prompt=COUNTING, max_tokens=3, temperature=0,
                                    extra_body={"n_predict": 5})
    assert out.usage.completion_tokens == 3  # OpenAI's name wins


def test_any_model_name_gets_the_loaded_model(server, client):
    out = client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4, temperature=0)
    assert out.choices[0].message.content and out.model == server.model_id
    body = {"messages": QUESTION, "max_tokens": 2}  # no model at all: llama-server's clients often send none
    assert server.request("POST", "/v1/chat/completions", body)[0] == 200


ODD_VALUES = [None, True, -1, 0, 1 << 70, 1e308, "x", "", [], [1], {}, {"a": 1}]
FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
          "seed", "stop", "n", "stream", "stream_options", "tau", "gamma", "speculative", "lookup", "cache_prompt",
          "logprobs", "presence_penalty", "response_format", "tools", "logit_bias", "n_predict", "grammar",
          "json_schema", "repeat_penalty", "ignore_eos"]


def test_odd_values_in_every_field_get_an_answer_not_a_500(server):
    unexpected = []
    for field in FIELDS:
        for value in ODD_VALUES:
            body = {"messages": QUESTION, "max_tokens": 1, field: value}
            status, headers, raw = server.request("POST", "/v1/chat/completions", body)
            if status >= 500 or (status >= 400 and "error" not in json.loads(raw)):
                unexpected.append((field, value, status, raw[:200]))
    assert not unexpected, unexpected


def test_still_serving_after_bad_requests(server, client):
    out = client.chat.completions.create(model=server.model_id, messages=QUESTION, max_tokens=4, temperature=0)
    assert out.choices[0].message.content and server.proc.poll() is None


# ---- many clients, disconnects --------------------------------------------------------------

CONCURRENT_CLIENTS, REQUESTS_PER_CLIENT = 8, 25
QUESTIONS = ["What is 2 + 2?", "Name a color.", "Say hello.", "What is the opposite of hot?", "Name a fruit.",
             "What day comes after Monday?", "Name an ocean.", "How many legs does a dog have?"]


def test_concurrent_clients_get_what_one_by_one_gives(server):
    def ask(client: openai.OpenAI, question: str) -> str:
        return client.chat.completions.create(model=server.model_id, max_tokens=6, temperature=0,
                                              messages=[{"role": "user", "content": question}]).choices[0].message.content

    one_by_one = {q: ask(server.client(), q) for q in QUESTIONS}
    answers: list[list] = [[] for _ in range(CONCURRENT_CLIENTS)]
    barrier = threading.Barrier(CONCURRENT_CLIENTS)

    def run(i: int) -> None:
        client = server.client()
        barrier.wait()
        for j in range(REQUESTS_PER_CLIENT):
            q = QUESTIONS[(i + j) % len(QUESTIONS)]
            try:
                answers[i].append((q, ask(client, q)))
            except Exception as e:  # recorded: the assertion below shows what failed
                answers[i].append((q, e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads)
    assert [len(a) for a in answers] == [REQUESTS_PER_CLIENT] * CONCURRENT_CLIENTS
    wrong = [(q, a) for client_answers in answers for q, a in client_answers if a != one_by_one[q]]
    assert not wrong, wrong[:5]


def _open_stream(port: int, body: dict) -> tuple[socket.socket, Any]:
    """A streaming request on a raw socket; returns it and a reader of its response lines."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT)
    data = json.dumps({**body, "stream": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return sock, sock.makefile("rb")


def _read_events(reader: Any, n: int) -> list[dict]:
    """Reads n data events of a chunked SSE response (chunk-size lines are skipped)."""
    events = []
    while len(events) < n:
        line = reader.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: {"):
            events.append(json.loads(line[len(b"data: "):]))
    return events


def test_client_that_drops_mid_stream(server, client):
    request = {"prompt": COUNTING, "max_tokens": 64, "temperature": 0}
    whole = client.completions.create(model=server.model_id, **request)
    assert whole.usage.completion_tokens == 64  # uninterrupted, the request runs to its limit
    sock, reader = _open_stream(server.port, request)
    assert _read_events(reader, 2)
    reader.close()
    sock.close()
    stopped = server.wait_for(re.compile(r"completion request stopped after (\d+) tokens"), REQUEST_TIMEOUT)
    # it stops at the next step after the disconnect: a few tokens, not the 64 it would have made
    assert int(stopped.group(1)) < 32
    again = client.completions.create(model=server.model_id, **request)
    assert again.choices[0].text == whole.choices[0].text


# ---- servers of their own: API key, full queue, shutdown ------------------------------------

def test_no_cors_unless_asked(server):
    headers = server.request("GET", "/v1/models", headers={"Origin": "http://elsewhere.example"})[1]
    assert not any(h.startswith("access-control-") for h in headers)


def test_api_key_and_cors():
    s = Server("--cors-origin", "http://allowed.example", env={"KANGAROO_EDGE_API_KEY": "sesame"})
    try:
        assert s.request("GET", "/health")[0] == 200  # open: load balancers and health checks
        res = s.request("GET", "/v1/models")
        assert res[0] == 401 and error_of(res)["code"] == "invalid_api_key" and res[1]["www-authenticate"] == "Bearer"
        assert s.request("GET", "/v1/models", headers={"Authorization": "Bearer sesam"})[0] == 401
        assert s.request("POST", "/v1/chat/completions", CHAT_OK)[0] == 401
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        out = s.client("sesame").chat.completions.create(model=s.model_id, messages=QUESTION, max_tokens=4)
        assert out.choices[0].message.content
        # CORS for the origin asked for only; a browser's preflight carries no key and needs none
        allowed = s.request("GET", "/health", headers={"Origin": "http://allowed.example"})[1]
        assert allowed["access-control-allow-origin"] == "http://allowed.example"
        assert "access-control-allow-origin" not in s.request("GET", "/health", headers={"Origin": "http://x"})[1]
        preflight = s.request("OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight[0] == 200 and preflight[1]["access-control-allow-origin"] == "http://allowed.example"
    finally:
        assert s.stop() == 0


def test_full_queue_answers_503_and_the_queue_is_served_in_order():
    s = Server("--max-queue", "3", "--parallel", "1")  # one at a time: the order of the answers is the queue's
    try:
        running, reader = _open_stream(s.port, {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0})
        _read_events(reader, 1)  # the model is busy with this one
        done: list[str] = []

        def queued(name: str) -> None:
            s.client().completions.create(model=s.model_id, prompt=COUNTING, max_tokens=2, temperature=0)
            done.append(name)

        def n_waiting() -> int:
            return json.loads(s.request("GET", "/health")[2])["waiting"]

        waiting = []
        for name in ("first", "second"):
            waiting.append(threading.Thread(target=queued, args=(name,)))
            waiting[-1].start()
            _wait_until(lambda: n_waiting() == len(waiting))
        dropper, dropper_reader = _open_stream(s.port, {"prompt": COUNTING, "max_tokens": 2})
        _wait_until(lambda: n_waiting() == 3)
        status, headers, _ = res = s.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 503 and int(headers["retry-after"]) >= 1 and error_of(res)["code"] == "queue_full"
        dropper_reader.close()
        dropper.close()  # leaves while waiting: it leaves the queue
        reader.close()
        running.close()  # frees the model for the queue
        for t in waiting:
            t.join(REQUEST_TIMEOUT)
        assert done == ["first", "second"]
        s.wait_for(re.compile(r"completion request left the queue: the client closed"), REQUEST_TIMEOUT)
        assert s.request("GET", "/health")[0] == 200
    finally:
        assert s.stop() == 0


def _wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_mid_stream_is_clean(sig):
    s = Server()
    sock, reader = _open_stream(s.port, {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0})
    _read_events(reader, 1)
    s.proc.send_signal(sig)
    rest = reader.read()  # the stream ends with an error event, not a hang
    reader.close()
    sock.close()
    assert b'"code":"shutting_down"' in rest, rest[-500:]
    assert s.stop(sig) == 0
    assert "kangaroo-edge serve: stopped" in "".join(s.log)

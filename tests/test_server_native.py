"""llama-server's own endpoints on `kangaroo-edge serve`: POST /completion (n_predict, streamed
as llama.cpp streams it: no [DONE]), /tokenize, /detokenize, /apply-template and GET /props,
checked against the library and the OpenAI endpoints of the same server."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_N_CTX
from test_server import COUNTING, QUESTION, Server, error_of, sse_data


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def test_completion_is_the_openai_completion(server):
    status, _, body = server.request("POST", "/completion", {"prompt": COUNTING, "n_predict": 8, "temperature": 0})
    assert status == 200, body
    out = json.loads(body)
    openai_out = json.loads(server.request("POST", "/v1/completions",
                                           {"prompt": COUNTING, "max_tokens": 8, "temperature": 0})[2])
    assert out["content"] == openai_out["choices"][0]["text"] and out["stop"] is True
    assert out["tokens_predicted"] == 8 and out["tokens_evaluated"] == openai_out["usage"]["prompt_tokens"]
    assert out["timings"]["predicted_n"] == 8 and out["model"] == server.model_id


def test_completion_stream(server):
    request = {"prompt": COUNTING, "n_predict": 8, "temperature": 0}
    whole = json.loads(server.request("POST", "/completion", request)[2])
    status, headers, body = server.request("POST", "/completion", {**request, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for d in sse_data(body)]  # llama.cpp's stream has no [DONE]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    assert events[-1]["tokens_predicted"] == 8 and "timings" in events[-1]


def test_completion_refuses_what_it_does_not_implement(server):
    res = server.request("POST", "/completion", {"prompt": "x", "mirostat": 2})
    assert res[0] == 400 and error_of(res)["param"] == "mirostat"


def test_completion_takes_a_grammar(server):
    res = server.request("POST", "/completion", {"prompt": "Is the sky blue?", "n_predict": 8,
                                                 "grammar": 'root ::= ("yes" | "no") "."'})
    assert res[0] == 200 and json.loads(res[2])["content"] in ("yes.", "no.")


def test_tokenize_and_detokenize(server, smollm):
    text = "Hello, kangaroo! <|im_start|>"
    ids = json.loads(server.request("POST", "/tokenize", {"content": text})[2])["tokens"]
    assert ids == smollm.tokenize(text, add_special=False)
    as_text = json.loads(server.request("POST", "/tokenize", {"content": text, "parse_special": False})[2])["tokens"]
    assert as_text == smollm.tokenize(text, add_special=False, parse_special=False) and len(as_text) > len(ids)
    pieces = json.loads(server.request("POST", "/tokenize", {"content": text, "with_pieces": True})[2])["tokens"]
    assert [p["id"] for p in pieces] == ids and "".join(p["piece"] for p in pieces) == text
    back = json.loads(server.request("POST", "/detokenize", {"tokens": ids})[2])["content"]
    assert back == text


def test_apply_template_and_props(server, smollm):
    prompt = json.loads(server.request("POST", "/apply-template", {"messages": QUESTION})[2])["prompt"]
    assert prompt == smollm.apply_chat_template(QUESTION)
    props = json.loads(server.request("GET", "/props")[2])
    settings = props["default_generation_settings"]
    assert settings["n_ctx"] == TEST_N_CTX and settings["params"]["n_predict"] == 2048
    assert settings["params"]["temperature"] == 0.8 and props["total_slots"] == 4  # --parallel, as llama-server's default
    # llama-server's penalty defaults: off, over a window of 64
    assert settings["params"]["repeat_penalty"] == 1.0 and settings["params"]["repeat_last_n"] == 64
    assert "<|im_start|>" in props["chat_template"] and props["model_path"].endswith(".gguf")


@pytest.mark.parametrize("path,body,param", [
    ("/tokenize", {"content": 5}, "content"), ("/tokenize", {"content": "x", "add_special": "yes"}, "add_special"),
    ("/detokenize", {"tokens": [1, "a"]}, "tokens[1]"), ("/detokenize", {"tokens": [10 ** 9]}, "tokens"),
    ("/apply-template", {"messages": "hi"}, "messages"), ("/tokenize", [1], "body")])
def test_bad_native_requests(server, path, body, param):
    res = server.request("POST", path, body)
    assert res[0] == 400 and error_of(res)["param"] == param, res


# ---- /infill --------------------------------------------------------------------------------

INFILL = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\nprint(add(1, 2))\n", "n_predict": 6,
          "temperature": 0}


def test_infill_refuses_a_model_without_fim_tokens(server):
    res = server.request("POST", "/infill", INFILL)
    assert res[0] == 400, res
    err = error_of(res)
    assert err["param"] == "input_prefix" and "<|fim_prefix|>" in err["message"]


def test_infill_on_qwen_coder(qwen, qwen_path):
    s = Server("-m", str(qwen_path))
    try:
        status, _, body = s.request("POST", "/infill", INFILL)
        assert status == 200, body
        out = json.loads(body)
        fim = [qwen.tokenize(t, add_special=False)[0] for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")]
        as_text = {"add_special": False, "parse_special": False}
        ids = ([fim[0]] + qwen.tokenize(INFILL["input_prefix"], **as_text) + [fim[1]]
               + qwen.tokenize(INFILL["input_suffix"], **as_text) + [fim[2]])
        qwen.reset()
        want = qwen.generate(ids, 6, temperature=0.0)
        assert out["content"] == want.text and out["tokens_evaluated"] == len(ids)
        assert "a + b" in out["content"]
        res = s.request("POST", "/infill", {**INFILL, "input_extra": [{"filename": "x.py", "text": "x = 1"}]})
        assert res[0] == 400 and error_of(res)["param"] == "input_extra"
    finally:
        assert s.stop() == 0

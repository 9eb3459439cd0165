"""Bad parameters and states that test_errors.py does not cover: absurd sizes, text that is not
clean UTF-8, NaN/inf draft settings, a closed model. Each gets a clear Python exception naming
the parameter, and the model stays usable."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import make_adapter
from kangaroo_edge import EngineError, KangarooLM

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

# One engine thread: these tests check behaviour, not speed, and a second thread only adds
# spin-waiting on a busy machine.
THREADS = 1

MAX_N_CTX = 1 << 20


def load(path, n_ctx=256, **kw):
    return KangarooLM(path, n_ctx=n_ctx, n_threads=THREADS, device="cpu", **kw)


@pytest.fixture(scope="module")
def lm(smollm_path):
    return load(smollm_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_ctx": MAX_N_CTX + 1}, "n_ctx"),
    ({"n_ctx": 1 << 40}, "n_ctx"),
    ({"n_ctx": 256.0}, "n_ctx"),
    ({"n_ctx": True}, "n_ctx"),
    ({"n_threads": 100_000}, "n_threads"),
    ({"n_threads": -1}, "n_threads"),
    ({"n_threads": 1.5}, "n_threads"),
])
def test_load_parameters_out_of_range(smollm_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        KangarooLM(smollm_path, **{"n_ctx": 256, "device": "cpu", **kwargs})


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def test_n_ctx_larger_than_memory_is_an_error_not_an_oom_kill(smollm_path):
    # The largest accepted n_ctx asks for a 22.5 GiB KV cache with SmolLM2-135M: on a machine
    # that cannot hold it the load must fail cleanly (zeroing the cache would wake the OOM killer).
    per_cell = load(smollm_path, n_ctx=256).engine.kv_bytes // 256
    need = per_cell * MAX_N_CTX
    if need > mem_available():
        with pytest.raises(EngineError, match=rf"n_ctx={MAX_N_CTX} needs a [\d.]+ GiB KV cache.*smaller n_ctx"):
            load(smollm_path, n_ctx=MAX_N_CTX)
    else:  # a machine this big simply gets the cache
        assert load(smollm_path, n_ctx=MAX_N_CTX).engine.kv_bytes == need


@pytest.mark.parametrize("max_tokens", [10 ** 18, 2 ** 63])
@pytest.mark.parametrize("kangaroo", [False, True])
def test_huge_max_tokens_stops_at_the_context(smollm_path, tmp_path, max_tokens, kangaroo):
    lm = load(smollm_path, n_ctx=32)
    if kangaroo:  # the budget left is handed to the native draft loop, which takes a C int
        lm.load_adapter(make_adapter(lm, tmp_path / "a.gguf", 2))
    prompt = lm.tokenize("Once upon a time")
    r = lm.generate(prompt, max_tokens=max_tokens)
    assert r.finish_reason in ("length", "stop")
    assert len(prompt) + len(r.token_ids) <= 32 + 1
    streamed = [t for c in lm.generate(prompt, max_tokens=max_tokens, stream=True) for t in c.token_ids]
    assert streamed == r.token_ids


@pytest.mark.parametrize("max_tokens", [2.0, True, "4", -(2 ** 63)])
def test_max_tokens_of_the_wrong_kind(lm, max_tokens):
    with pytest.raises(ValueError, match="max_tokens"):
        lm.generate("Hello", max_tokens=max_tokens)


def test_non_utf8_bytes_prompt_is_decoded_with_replacement(lm):
    raw = b"caf\xc3 \xff\xfe and then"
    r = lm.generate(raw, max_tokens=4)
    assert len(r.token_ids) == 4
    assert r.token_ids == lm.generate(raw.decode("utf-8", errors="replace"), max_tokens=4).token_ids


def test_lone_surrogate_prompt_is_a_value_error(lm):
    # a str that cannot be encoded as UTF-8 (a lone surrogate, e.g. from a bad JSON escape)
    with pytest.raises(ValueError, match="(?i)utf-8|unicode|surrogate"):
        lm.generate("bad \ud800 text", max_tokens=2)
    assert lm.generate("Hello", max_tokens=2).token_ids


@pytest.mark.parametrize("prompt", ["\x00", " ", "\n\n\n", "\u200b", "🦘" * 20])
def test_odd_but_valid_prompts_generate(lm, prompt):
    assert len(lm.generate(prompt, max_tokens=2).token_ids) >= 1


@pytest.mark.parametrize("prompt", [b"", [], ()])
def test_empty_prompts_of_every_kind(lm, prompt):
    with pytest.raises(ValueError, match="empty"):
        lm.generate(prompt, max_tokens=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"tau": float("inf")}, "tau"),
    ({"tau": float("-inf")}, "tau"),
    ({"tau": -0.1}, "tau"),
    ({"tau": "0.5"}, "tau"),
    ({"tau": True}, "tau"),
    ({"gamma": -1}, "gamma"),
    ({"gamma": -(2 ** 40)}, "gamma"),
    ({"gamma": 2.5}, "gamma"),
    ({"gamma": True}, "gamma"),
])
def test_bad_draft_settings(lm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lm.generate("Hello", max_tokens=2, **kwargs)


@pytest.fixture(scope="module")
def with_adapter(smollm_path, tmp_path_factory):
    lm = load(smollm_path)
    lm.load_adapter(make_adapter(lm, tmp_path_factory.mktemp("adapter") / "a.gguf", 2))
    return lm


@pytest.mark.parametrize("kwargs", [{"gamma": 65}, {"gamma": 10 ** 9}, {"tau": float("nan")},
                                    {"tau": float("inf")}, {"gamma": 0}])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_draft_settings_with_an_adapter_fail_before_generating(with_adapter, kwargs, stream):
    # with a stream too the error comes from the call, not after the first chunks
    with pytest.raises(ValueError, match="gamma|tau"):
        with_adapter.generate("Hello", max_tokens=8, stream=stream, **kwargs)
    r = with_adapter.generate("Hello", max_tokens=4)
    assert len(r.token_ids) == 4 and r.draft.speculative is True


def test_every_entry_point_of_a_closed_model(smollm_path):
    lm = load(smollm_path)
    pending = lm.generate("Hello", max_tokens=2, stream=True)  # created, not started
    lm.close()
    lm.close()  # closing twice is harmless
    calls = [
        lambda: lm.generate("Hello", max_tokens=2),
        lambda: next(pending),
        lambda: lm.tokenize("Hello"),
        lambda: lm.detokenize([1, 2]),
        lambda: lm.info(),
        lambda: lm.n_ctx,
        lambda: lm.reset(),
        lambda: lm.load_adapter(smollm_path),  # an existing file: the closed model is the problem
        lambda: lm.create_completion("Hello", max_tokens=2),
        lambda: lm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=2),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="closed"):
            call()


def test_context_manager_closes(smollm_path):
    with load(smollm_path) as lm:
        assert lm.generate("Hi", max_tokens=2).token_ids
    with pytest.raises(RuntimeError, match="closed"):
        lm.generate("Hi", max_tokens=2)

"""The Python API: generation, streaming, stop conditions, chat, tokens."""

from __future__ import annotations

import pytest

from kangaroo_edge import GenerationResult, KangarooLM, _native
from kangaroo_edge.decoding import DraftOptions

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

CHAT = [{"role": "user", "content": "List three fruits."}]


def test_generate_returns_result_with_stats(smollm_path):
    lm = KangarooLM(smollm_path, n_ctx=256, n_threads=1)  # its own: other tests load adapters into `smollm`
    r = lm.generate("The capital of France is", max_tokens=8)
    assert isinstance(r, GenerationResult)
    assert len(r.token_ids) == 8 and r.finish_reason == "length"
    assert r.text == lm.detokenize(r.token_ids)
    assert r.stats.predicted_n == 8 and r.stats.predicted_per_second > 0
    # no adapter is loaded: speculation falls back to plain decoding and says so
    assert r.draft.speculative is False and "plain decoding" in r.draft.speculative_fallback


def test_stream_equals_non_stream(smollm):
    prompt = smollm.apply_chat_template(CHAT)
    full = smollm.generate(prompt, max_tokens=40)
    chunks = list(smollm.generate(prompt, max_tokens=40, stream=True))
    assert "".join(c.text for c in chunks) == full.text
    assert [t for c in chunks for t in c.token_ids] == full.token_ids
    assert chunks[-1].finish_reason == full.finish_reason
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_end_of_generation_token_stops(smollm):
    r = smollm.generate(smollm.apply_chat_template([{"role": "user", "content": "Say hi."}]), max_tokens=200)
    assert r.finish_reason == "stop" and len(r.token_ids) < 200
    assert not any(smollm.engine.is_eog(t) for t in r.token_ids)


def test_stop_string_cuts_text(smollm):
    base = smollm.generate("Count: 1, 2, 3,", max_tokens=30)
    assert ", 6" in base.text
    r = smollm.generate("Count: 1, 2, 3,", max_tokens=30, stop=[", 6"])
    assert r.finish_reason == "stop"
    assert r.text == base.text[: base.text.index(", 6")]
    streamed = "".join(c.text for c in smollm.generate("Count: 1, 2, 3,", max_tokens=30, stop=", 6", stream=True))
    assert streamed == r.text


def test_the_decoder_decides_the_end(smollm):
    """The engine ends a generation at its token limit and says why; a stop string (text, which
    the engine does not see) is reported to it, so its record counts the tokens returned."""
    engine = smollm.engine
    params = DraftOptions(speculative=False).native()
    out = engine.start(smollm.tokenize("Count: 1, 2, 3,"), _native.SamplingParams(), 5)
    while engine.finish_reason is None:
        out += engine.step(params)
    assert len(out) == 5 and engine.finish_reason == "length" and engine.stats().predicted_n == 5
    with pytest.raises(RuntimeError, match="has ended"):
        engine.step(params)
    r = smollm.generate("Count: 1, 2, 3,", max_tokens=30, stop=", 6")
    assert r.finish_reason == "stop" and r.stats.predicted_n == len(r.token_ids) < 30
    assert ", 6" in smollm.detokenize(r.token_ids)  # the last token completed the stop string


def test_full_context_ends_with_length(smollm_path):
    lm = KangarooLM(smollm_path, n_ctx=24, n_threads=2)
    prompt = lm.tokenize("Once upon a time")
    r = lm.generate(prompt, max_tokens=None)
    assert r.finish_reason in ("length", "stop")
    if r.finish_reason == "length":
        assert len(prompt) + len(r.token_ids) == 24 + 1  # the last token needs no KV slot
    assert lm.generate("Hi", max_tokens=2).token_ids  # still usable


def test_prompt_at_exactly_the_context(smollm_path):
    lm = KangarooLM(smollm_path, n_ctx=16, n_threads=2)
    ids = lm.tokenize("one two three four five six seven eight nine ten " * 3)[:17]
    r = lm.generate(ids[:16], max_tokens=5)
    assert r.finish_reason == "length" and len(r.token_ids) == 1
    with pytest.raises(ValueError, match="n_ctx=16"):
        lm.generate(ids, max_tokens=5)


def test_seeded_sampling_is_reproducible_and_varies(smollm):
    """Also with an adapter loaded and the controller's timing-based choices (test_kangaroo.py
    shows why: the position's noise, not the order of draws, decides each token)."""
    prompt = "Write a word:"
    a = smollm.generate(prompt, max_tokens=12, temperature=1.0, seed=7)
    b = smollm.generate(prompt, max_tokens=12, temperature=1.0, seed=7)
    assert a.token_ids == b.token_ids
    others = {tuple(smollm.generate(prompt, max_tokens=12, temperature=1.0, seed=s).token_ids) for s in range(5)}
    assert len(others) > 1


def test_top_k_one_is_greedy(smollm):
    greedy = smollm.generate("The sky is", max_tokens=10)
    topk1 = smollm.generate("The sky is", max_tokens=10, temperature=1.5, top_k=1, seed=3)
    assert topk1.token_ids == greedy.token_ids


def test_prefix_reuse_keeps_results(smollm):
    prompt = smollm.apply_chat_template(CHAT)
    first = smollm.generate(prompt, max_tokens=20)
    smollm.generate("Something else entirely", max_tokens=5)
    again = smollm.generate(prompt, max_tokens=20)
    assert again.token_ids == first.token_ids


def test_chat_completion_shapes(smollm):
    """The library's results are OpenAI's: its own types (the `openai` package) read them."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    r = ChatCompletion.model_validate(smollm.create_chat_completion(CHAT, max_tokens=30))
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert r.usage.completion_tokens == r.model_extra["timings"]["predicted_n"]
    raw = list(smollm.create_chat_completion(CHAT, max_tokens=30, stream=True))
    chunks = [ChatCompletionChunk.model_validate(c) for c in raw]
    # the role first, with empty content; usage only when stream_options asks for it
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert not any("usage" in c for c in raw) and "timings" in raw[-1]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == msg.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    counted = [ChatCompletionChunk.model_validate(c) for c in
               smollm.create_chat_completion(CHAT, max_tokens=30, stream=True, stream_options={"include_usage": True})]
    assert counted[-1].choices == [] and counted[-1].usage.completion_tokens == r.usage.completion_tokens
    assert all(c.usage is None for c in counted[:-1])


def test_chat_template_is_the_gguf_one(smollm):
    text = smollm.apply_chat_template(CHAT)
    assert "<|im_start|>user\nList three fruits.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_special_tokens_in_raw_prompts_are_parsed(smollm):
    ids = smollm.tokenize("<|im_start|>user")
    assert ids[0] == smollm.engine.bos  # <|im_start|> is SmolLM2's BOS/special token
    plain = smollm.tokenize("<|im_start|>user", parse_special=False)
    assert len(plain) > len(ids)


def test_tokenize_roundtrip_unicode(smollm):
    text = "Kangaroos 🦘 hop — naïve café 東京"
    assert smollm.detokenize(smollm.tokenize(text)) == text


def test_completion_shape(smollm):
    from openai.types import Completion

    r = Completion.model_validate(smollm.create_completion("2 + 2 =", max_tokens=4))
    assert r.id.startswith("cmpl-") and r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    chunks = list(smollm.create_completion("2 + 2 =", max_tokens=4, stream=True))
    # OpenAI streams text completions as Completion objects whose finish_reason is null until the last
    last = Completion.model_validate(chunks[-1])
    assert all(c["object"] == "text_completion" and c["id"] == last.id for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == r.choices[0].text
    assert last.choices[0].finish_reason == "length" and not any("usage" in c for c in chunks)


def test_info(smollm):
    info = smollm.info()
    assert info["arch"] == "llama" and info["n_layer"] == 30 and info["n_vocab"] == 49152

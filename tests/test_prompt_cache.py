"""Several conversations' states in RAM (kangaroo_edge/prompt_cache.py): a conversation left for
another request and resumed evaluates only its new tokens, and generates exactly what a fresh
model generates for the same prompt (plain and Kangaroo); the cache keeps to its capacity, least
recently used out first; a state is refused by another model."""

from __future__ import annotations

import pytest

from kangaroo_edge import EngineError, KangarooLM, _native
from kangaroo_edge.prompt_cache import PromptCache, common_prefix
from tiny_models import make_tiny_gguf

PASSAGE = ("The lighthouse keeper of Varen Point kept a logbook for forty years. Each morning he wrote the "
           "wind, the colour of the sea and the ships he had seen, and each evening the lamp's oil. ") * 4


@pytest.fixture(scope="module")
def lm(smollm_path) -> KangarooLM:
    model = KangarooLM(smollm_path, n_ctx=2048)  # its own engine: the session's shared one keeps no cache
    yield model
    model.close()


def chat(lm: KangarooLM, *turns: str, answers: tuple[str, ...] = ()) -> list[int]:
    messages = []
    for i, t in enumerate(turns):
        messages.append({"role": "user", "content": t})
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    return lm.tokenize(lm.apply_chat_template(messages))


@pytest.mark.parametrize("speculative", [False, True])
def test_a_resumed_conversation_reuses_its_prefix_and_equals_a_fresh_model(lm, smollm_path, speculative):
    lm.reset()
    lm.set_cache(PromptCache(1 << 30))
    try:
        first = chat(lm, PASSAGE + "\nWhat did the keeper write each morning?")
        answer = lm.generate(first, 24, speculative=speculative)
        lm.generate(chat(lm, "Give this conversation a three-word title."), 8, speculative=speculative)
        second = chat(lm, PASSAGE + "\nWhat did the keeper write each morning?", "And each evening?",
                      answers=(answer.text,))
        resumed = lm.generate(second, 24, speculative=speculative)
    finally:
        lm.set_cache(None)
    # the first turn's prompt and answer came back from the cache (the adapter's cache too: the
    # engine reuses no more than the drafter holds)
    assert resumed.stats.cache_n >= len(first)
    assert common_prefix(first, second) == len(first)
    # a fresh model that never left the conversation computes the same
    with KangarooLM(smollm_path, n_ctx=2048) as fresh:
        assert fresh.generate(first, 24, speculative=speculative).token_ids == answer.token_ids
        expected = fresh.generate(second, 24, speculative=speculative)
    assert expected.stats.cache_n == resumed.stats.cache_n
    assert resumed.token_ids == expected.token_ids


def test_without_a_cache_the_other_request_evicts_the_conversation(lm):
    lm.reset()
    first = chat(lm, PASSAGE + "\nWhat did the keeper write each morning?")
    answer = lm.generate(first, 8, speculative=False)
    title = chat(lm, "Give this conversation a three-word title.")
    lm.generate(title, 4, speculative=False)
    second = chat(lm, PASSAGE + "\nWhat did the keeper write each morning?", "And each evening?", answers=(answer.text,))
    # only what the title request shares with it (the template's system turn)
    assert lm.generate(second, 4, speculative=False).stats.cache_n <= common_prefix(title, second) < 40


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-cache")
    a = KangarooLM(make_tiny_gguf(d, "llama"), n_ctx=256, n_threads=1)
    b = KangarooLM(make_tiny_gguf(d, "qwen2"), n_ctx=256, n_threads=1)
    yield a, b
    a.close()
    b.close()


def state_after(lm: KangarooLM, prompt: list[int]):
    lm.generate(prompt, 2, speculative=False)
    return lm.save_state()


@pytest.mark.fast
def test_the_cache_keeps_to_its_capacity_least_recently_used_out_first(tiny_pair):
    lm, _ = tiny_pair
    states = [state_after(lm, [1 + i] * (20 + i)) for i in range(3)]  # the engine holds the last
    size = max(s.nbytes for s in states)
    cache = PromptCache(2 * size + size // 2)  # room for two
    cache.store(states[0])
    cache.store(states[1])
    assert 20 <= cache.longest_match([1] * 40)[1] <= 21  # the 20 prompt tokens (and the generated one?)
    cache.store(states[0])  # used again: states[1] is now the oldest
    cache.store(states[2])
    assert len(cache) == 2 and cache.nbytes <= cache.capacity_bytes
    assert cache.longest_match([2] * 40)[1] == 0  # evicted
    # the engine on another conversation; a prompt that continues states[0]: the engine's
    # sequence is kept, evicting the oldest, states[0] itself, which is loaded all the same
    lm.generate([4] * 25, 2, speculative=False)
    cache.prepare(lm.engine, list(states[0].tokens) + [5])
    assert list(lm.engine.tokens) == list(states[0].tokens) and cache.hits == 1
    assert len(cache) == 2 and cache.longest_match([1] * 40)[1] == 0
    assert cache.longest_match([3] * 40)[1] > 0 and cache.longest_match([4] * 40)[1] > 0
    tiny = PromptCache(size // 2)
    tiny.store(states[0])  # larger than the whole cache: not kept
    assert len(tiny) == 0 and tiny.nbytes == 0


@pytest.mark.fast
def test_a_loaded_state_continues_exactly_and_needs_a_start(tiny_pair):
    lm, _ = tiny_pair
    prompt, more = list(range(5, 45)), [7, 8, 9]
    lm.reset()
    saved = state_after(lm, prompt)
    expected = lm.generate(prompt + more, 12, speculative=False)  # continued without leaving
    lm.reset()
    state_after(lm, prompt)
    lm.generate([3] * 30, 4, speculative=False)  # another conversation
    lm.load_state(saved)
    assert lm.n_tokens == saved.n_tokens
    with pytest.raises(EngineError, match="start"):
        lm.engine.step(_native.DraftParams(_native.DraftMode.OFF))
    r = lm.generate(prompt + more, 12, speculative=False)
    assert r.stats.cache_n == expected.stats.cache_n >= len(prompt)
    assert r.token_ids == expected.token_ids


@pytest.mark.fast
def test_another_models_state_is_refused(tiny_pair):
    a, b = tiny_pair
    saved = state_after(a, list(range(5, 25)))
    with pytest.raises(ValueError, match="another model"):
        b.load_state(saved)
    assert b.generate(list(range(5, 25)), 2, speculative=False).token_ids  # b still works

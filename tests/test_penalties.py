"""Repetition penalties (repeat_penalty, frequency_penalty, presence_penalty, repeat_last_n) on
the default model: llama.cpp's tokens, and speculative decoding's output equal to plain decoding's
with drafting forced (the adapter, prompt lookup), since each verified row is penalized with the
output before it."""

from __future__ import annotations

import math

import pytest

from conftest import TEST_N_CTX, TEST_THREADS, chat_prompt, load_questions
from kangaroo_edge import _native
from kangaroo_edge.llamacpp import LlamaCpp
from kangaroo_edge.models import shipped_adapter_path

N_NEW = 64
# a completion the model repeats for as long as it may: penalties must change it
REPEATING = "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3,"
PENALTIES = [dict(repeat_penalty=1.3), dict(frequency_penalty=0.5, presence_penalty=0.5),
             dict(repeat_penalty=1.3, frequency_penalty=0.5, presence_penalty=0.5)]


@pytest.fixture(scope="module")
def lm(smollm):
    smollm.load_adapter(shipped_adapter_path(None))  # other tests may have loaded theirs
    return smollm


def prompts(lm) -> list[str]:
    return [chat_prompt(lm, q) for q in load_questions(2)] + [REPEATING]


def fresh(lm, prompt, **kwargs):
    lm.reset()  # the prompt evaluated the same way each time
    return lm.generate(prompt, N_NEW, **kwargs)


def test_greedy_penalties_equal_llamacpp(lm):
    oracle = LlamaCpp(lm.model_path, TEST_N_CTX, TEST_THREADS)
    changed = 0
    for prompt in prompts(lm):
        plain = fresh(lm, prompt, speculative=False)
        for penalties in PENALTIES:
            ours = fresh(lm, prompt, speculative=False, **penalties)
            assert ours.token_ids == oracle.sample(ours.prompt_token_ids, N_NEW, temp=0.0, **penalties), penalties
            changed += ours.token_ids != plain.token_ids
    assert changed >= len(PENALTIES)  # the penalties did something, so agreement means something


@pytest.mark.parametrize("last_n", [8, -1])
def test_penalty_window_equals_llamacpp(lm, last_n):
    """repeat_last_n is llama-cpp-python's last_n_tokens_size; -1 (the whole output) is
    llama.cpp's n_ctx, as its CLI and server turn -1 into."""
    oracle = LlamaCpp(lm.model_path, TEST_N_CTX, TEST_THREADS, last_n_tokens_size=TEST_N_CTX if last_n < 0 else last_n)
    penalties = dict(repeat_penalty=1.3, presence_penalty=0.5)
    window_mattered = 0
    # several prompts: on some CPUs the model ends one of them within the window, where the
    # window cannot matter (a CI machine's SmolLM2 stopped REPEATING after 7 tokens)
    for prompt in prompts(lm):
        ours = fresh(lm, prompt, speculative=False, repeat_last_n=last_n, **penalties)
        assert ours.token_ids == oracle.sample(ours.prompt_token_ids, N_NEW, temp=0.0, **penalties), prompt[:40]
        other = fresh(lm, prompt, speculative=False, repeat_last_n=8 if last_n < 0 else -1, **penalties)
        window_mattered += ours.token_ids != other.token_ids
    assert window_mattered > 0  # so agreement with llama.cpp's window means something


@pytest.mark.parametrize("drafting", [dict(tau=0.0, gamma=1, lookup=False), dict(tau=0.0, gamma=4, lookup=False),
                                      dict(tau=0.6, gamma=6, lookup=True)], ids=["adapter-1", "adapter-4", "lookup"])
def test_speculative_greedy_with_penalties_equals_plain(lm, drafting):
    """Row j of a cycle is penalized with the output through draft j-1: the drafts are proposed
    without penalties, yet the tokens are plain decoding's."""
    accepted = lookups = 0
    for prompt in prompts(lm):
        for penalties in PENALTIES:
            plain = fresh(lm, prompt, speculative=False, **penalties)
            spec = fresh(lm, prompt, **drafting, **penalties)
            assert spec.token_ids == plain.token_ids, (prompt[:40], penalties)
            accepted += spec.stats.draft_n_accepted
            lookups += spec.stats.drafter("lookup").draft_n_accepted
    assert accepted > 0
    assert lookups > 0 or not drafting["lookup"]


def test_penalties_change_a_repeating_output(lm):
    plain = fresh(lm, REPEATING, speculative=False)
    assert plain.text.count("1, 2, 3") >= 5
    penalized = fresh(lm, REPEATING, speculative=False, repeat_penalty=1.3)
    assert penalized.text.count("1, 2, 3") < plain.text.count("1, 2, 3")
    # a window of 0 or neutral values turn them off
    assert fresh(lm, REPEATING, speculative=False, repeat_penalty=1.3, repeat_last_n=0).token_ids == plain.token_ids
    assert fresh(lm, REPEATING, speculative=False, repeat_penalty=1.0, frequency_penalty=0.0,
                 presence_penalty=0.0, repeat_last_n=-1).token_ids == plain.token_ids


@pytest.mark.parametrize("name,value", [("repeat_penalty", 0.0), ("repeat_penalty", -1.0),
                                        ("repeat_penalty", math.nan), ("repeat_penalty", 1e39),
                                        ("frequency_penalty", math.inf), ("presence_penalty", math.nan),
                                        ("repeat_last_n", -2), ("repeat_last_n", 1.5)])
def test_bad_values_name_the_parameter(lm, name, value):
    with pytest.raises(ValueError, match=name):
        lm.generate("Hello", 4, **{name: value})


@pytest.mark.parametrize("name,value", [("repeat_penalty", 0.0), ("repeat_penalty", math.inf),
                                        ("frequency_penalty", math.nan), ("presence_penalty", -math.inf),
                                        ("repeat_last_n", -2)])
def test_engine_refuses_bad_values(name, value):
    with pytest.raises(ValueError, match=name):
        _native.SamplingParams(**{name: value})

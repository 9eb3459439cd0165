"""Plain decoding against llama.cpp on the same GGUF: logits and greedy tokens."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TEST_N_CTX, TEST_THREADS, chat_prompt, load_questions
from kangaroo_edge.llamacpp import LlamaCpp

N_PROMPTS = 20
N_NEW = 128
# Our graph performs llama.cpp's operations in llama.cpp's order on the same ggml kernels, so the
# logits come out bit-identical (observed max |diff| = 0.0). The bound leaves room only for a
# different summation order (e.g. another thread split), far below any logit gap that matters.
LOGIT_ATOL = 1e-3


@pytest.fixture(scope="module", params=["smollm", "qwen"])
def model_and_oracle(request):
    lm = request.getfixturevalue(request.param)
    return lm, LlamaCpp(lm.model_path, TEST_N_CTX, TEST_THREADS)


# the fast tier's real-model smoke test: the default model's logits are llama.cpp's on a test question
@pytest.mark.parametrize("any_model", [pytest.param("smollm", marks=pytest.mark.fast), "qwen"], indirect=True)
def test_logits_match_llamacpp_at_every_position(any_model):
    oracle = LlamaCpp(any_model.model_path, TEST_N_CTX, TEST_THREADS, logits_all=True)
    ids = any_model.tokenize(chat_prompt(any_model, load_questions(1)[0]))
    assert len(ids) > 30
    ours = any_model.engine.forward(ids, 0, any_model.engine.n_layer, 0, "logits", True)
    ref = oracle.all_logits(ids)
    assert ours.shape == ref.shape == (len(ids), any_model.n_vocab)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


def test_greedy_tokens_equal_llamacpp(model_and_oracle):
    lm, oracle = model_and_oracle
    mismatches = []
    for q in load_questions(N_PROMPTS):
        prompt = chat_prompt(lm, q)
        ours = lm.generate(prompt, N_NEW, temperature=0.0, speculative=False)
        ref = oracle.greedy(ours.prompt_token_ids, N_NEW)
        if ours.token_ids != ref:
            mismatches.append(q["question_id"])
    assert mismatches == []


def test_tokenization_matches_llamacpp(any_model):
    oracle = LlamaCpp(any_model.model_path, 256, TEST_THREADS)
    for text in ["Hello, world!", "<|im_start|>user\nNaïve café — 東京 🦘<|im_end|>\n", "  spaces\tand\nlines  "]:
        assert any_model.tokenize(text) == oracle.llm.tokenize(text.encode(), add_bos=True, special=True)

"""Lossless after a reused prefix: a second call on the same model (every chat turn) reuses the
cached prompt prefix, and Kangaroo's greedy output must still be plain decoding's from the same
state, whatever the previous calls were (plain or Kangaroo, drafts rejected at their end or
not). Plain and Kangaroo calls share one prefill and one commit path, so they reuse the same
prefix and evaluate the rest of the prompt the same way; verified rows are computed exactly as
plain steps compute them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import TEST_N_CTX, TEST_THREADS, chat_prompt, load_questions
from kangaroo_edge import KangarooLM, _native

N_NEW = 48
FORCED = [dict(tau=0.0, gamma=g) for g in (1, 4, 8)]  # drafting forced: every cycle drafts gamma
N_QUESTIONS = {"smollm": 6, "qwen": 3}  # bounded by CI time; the benchmark runs all 240


@pytest.fixture(scope="module", params=["smollm", "qwen"])
def shipped(request, smollm_path, qwen_path) -> tuple[str, KangarooLM]:
    """The shipped models with the adapters the project ships for them."""
    name = "smollm" if request.param == "smollm" else "qwen2.5-coder-0.5b"
    return request.param, KangarooLM(None if name == "smollm" else name, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS,
                                     device="cpu")


def test_same_prompt_again_alternating_plain_and_kangaroo(shipped):
    """The same prompt, call after call: after the first plain call every call reuses the same
    cached prefix, so every call (plain or Kangaroo with forced drafting) must give the tokens
    the second plain call gave."""
    key, lm = shipped
    for q in load_questions(N_QUESTIONS[key]):
        prompt = chat_prompt(lm, q)
        lm.reset()
        lm.generate(prompt, N_NEW, speculative=False)  # leaves the prompt cached
        want = lm.generate(prompt, N_NEW, speculative=False).token_ids
        for i, opts in enumerate(FORCED + FORCED[::-1] + [{}]):  # {}: the speculation controller
            got = lm.generate(prompt, N_NEW, **opts).token_ids
            assert got == want, (q["question_id"], i, opts)
            assert lm.generate(prompt, N_NEW, speculative=False).token_ids == want, (q["question_id"], i, "plain")


def test_multi_turn_chat_with_forced_drafting_gives_the_plain_answers(shipped, smollm_path, qwen_path):
    """Two copies of the model hold the same conversation: one decodes every turn plainly, the
    other alternates plain turns and turns with forced drafting. Each turn reuses the cached
    conversation; the answers must be the same turn after turn."""
    key, lm = shipped
    plain_lm = KangarooLM(smollm_path if key == "smollm" else qwen_path, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS,
                          device="cpu")
    turns = [q["turns"][0] for q in load_questions(4)]
    options = [FORCED[1], {"speculative": False}, FORCED[2], FORCED[0]]
    lm.reset()
    messages: list[dict] = []
    for i, (turn, opts) in enumerate(zip(turns, options)):
        messages.append({"role": "user", "content": turn})
        want = plain_lm.create_chat_completion(messages, N_NEW, temperature=0.0, speculative=False)
        got = lm.create_chat_completion(messages, N_NEW, temperature=0.0, **opts)
        assert got["choices"][0]["message"] == want["choices"][0]["message"], (i, opts)
        assert got["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]
        messages.append(want["choices"][0]["message"])
    plain_lm.close()


# Context lengths around the attention span's boundaries (cells are read in multiples of
# ATTENTION_STEP = 64, allocated in multiples of KV_PAD = 256): a verification's rows straddle the
# boundary where a one-token step would read more cells.
CONTEXT_LENGTHS = [1, 37, 60, 63, 64, 65, 127, 128, 190, 248, 252, 255, 256, 257, 300, 505, 509, 511, 512, 513]


@pytest.mark.parametrize("path", ["adapter", "lookup"])
def test_every_verified_row_equals_a_plain_step_bit_for_bit(shipped, path):
    """From the same state (a prompt of n cached tokens), each row of a verification equals the
    logits of a plain one-token step fed the same inputs, bit for bit: for the adapter's deep-layer
    verification (k rows) and prompt lookup's whole-model verification (k + 1 rows)."""
    key, lm = shipped
    engine = lm.engine
    rng = np.random.default_rng(7)
    # a repeating pattern gives prompt lookup long matches to draft from; random ids elsewhere
    pattern = [int(t) for t in rng.integers(100, 5000, size=16)]
    mode = _native.DraftMode.THRESHOLD
    params = (_native.DraftParams(mode, tau=0.0, gamma=8) if path == "adapter"
              else _native.DraftParams(mode, tau=0.0, gamma=8, lookup=True))
    checked = 0
    for n in CONTEXT_LENGTHS:
        prompt = (pattern * (n // len(pattern) + 1))[:n]
        lm.reset()
        engine.start(prompt, _native.SamplingParams(), 17)
        engine.step(params)
        inputs, rows = engine.last_step()
        if path == "lookup" and len(inputs) == 1:
            continue  # no match to draft from (the shortest prompts)
        assert len(inputs) > 1, (n, path)
        engine.truncate(n)  # back to the same state: the prompt's cells are untouched
        for j, t in enumerate(inputs):
            plain = engine.append(t)[0]
            assert np.array_equal(plain, rows[j]), (n, path, j, float(np.max(np.abs(plain - rows[j]))))
        checked += 1
    assert checked >= len(CONTEXT_LENGTHS) - 2


def test_chat_cli_with_forced_drafting_gives_the_plain_answers():
    """`kangaroo-edge chat` through a pipe, three turns: with --tau 0 (drafting forced every cycle)
    the conversation is exactly the one --no-spec holds."""
    base = [sys.executable, "-m", "kangaroo_edge.cli.main", "chat", "-c", "1024", "-t", str(TEST_THREADS),
            "-n", "32", "--temp", "0", "--no-history"]
    questions = "\n".join(q["turns"][0].replace("\n", " ") for q in load_questions(3)) + "\n"

    def answers(*flags: str) -> list[str]:
        out = subprocess.run(base + list(flags), input=questions.encode(), capture_output=True, timeout=600)
        assert out.returncode == 0, out.stderr.decode()
        text = out.stdout.decode()
        assert "Traceback" not in text
        return [line for line in text.splitlines() if line.strip()]

    plain = answers("--no-spec")
    for gamma in ("1", "8"):
        assert answers("--tau", "0", "--gamma", gamma) == plain

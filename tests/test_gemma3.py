"""Gemma 3 (the real 270M, pretrained, Q4_K_M) against llama.cpp on the same GGUF, and Kangaroo on
it. The model has no chat template, so prompts are the test questions as plain text to continue.

Gemma 3 is the architecture that differs most from llama: embeddings scaled by sqrt(n_embd),
norms after attention and FFN, per-head q/k norms, GeGLU, and 15 of its 18 layers local (a
512-position sliding window, RoPE base 1e4) around 3 global ones (RoPE base 1e6). Prompts longer
than the window check that local layers stop seeing what slid out of it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from adapters import make_adapter
from conftest import QUESTIONS, TEST_N_CTX, TEST_THREADS, load_questions
from gguf_edit import copy_gguf
from kangaroo_edge import EngineError, KangarooLM, models
from kangaroo_edge.llamacpp import LlamaCpp
from kangaroo_edge.text import completion_prompt

N_PROMPTS = 20
N_NEW = 128
WINDOW = 512
# Our graph runs llama.cpp's gemma3 operations in its order on the same kernels, so the logits
# come out bit-identical (observed max |diff| = 0.0, also past the window); as for the other
# models the bound leaves room only for another summation order.
LOGIT_ATOL = 1e-3


def question_text(question: dict) -> str:
    return completion_prompt(question["turns"][0])


def long_prompt(lm: KangarooLM, n_tokens: int) -> list[int]:
    """The first n_tokens of several questions one after the other (past the sliding window)."""
    ids: list[int] = []
    for q in load_questions(40):
        ids += lm.tokenize(question_text(q), add_special=not ids)
        if len(ids) >= n_tokens:
            return ids[:n_tokens]
    raise AssertionError("the test questions are too short for a long prompt")


@pytest.fixture(scope="module")
def oracle(gemma3):
    return LlamaCpp(gemma3.model_path, TEST_N_CTX, TEST_THREADS)


def test_gemma3_hparams(gemma3):
    e = gemma3.engine
    assert (e.arch, e.n_layer, e.n_embd, e.n_head, e.n_head_kv, e.head_dim) == ("gemma3", 18, 640, 4, 1, 256)
    assert e.chat_template == ""  # the pretrained model: no template


def test_logits_match_llamacpp_past_the_window(gemma3):
    ids = long_prompt(gemma3, WINDOW + 200)
    full = LlamaCpp(gemma3.model_path, TEST_N_CTX, TEST_THREADS, logits_all=True)
    ref = full.all_logits(ids)
    ours = gemma3.engine.forward(ids, 0, gemma3.engine.n_layer, 0, "logits", True)
    assert ours.shape == ref.shape == (len(ids), gemma3.n_vocab)
    # rows past position 512 match only if the local layers stop attending to the prompt's start
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


def test_greedy_tokens_equal_llamacpp(gemma3, oracle):
    mismatches = []
    for q in load_questions(N_PROMPTS):
        # from scratch, as llama.cpp here: a reused prefix would evaluate the rest of the prompt in
        # another batch shape, whose kernels round differently (KangarooLM.reset), and Gemma's
        # logits (262k-token head, large activations) have near-ties that such rounding flips
        gemma3.reset()
        ours = gemma3.generate(question_text(q), N_NEW, temperature=0.0, speculative=False)
        ref = oracle.greedy(ours.prompt_token_ids, N_NEW)
        if ours.token_ids != ref:
            mismatches.append(q["question_id"])
    assert mismatches == []


def test_greedy_decoding_across_the_window_equals_llamacpp(gemma3, oracle):
    """Decoding steps whose keys slide out of the window (prompt 480 tokens + 128 new)."""
    ids = long_prompt(gemma3, WINDOW - 32)
    gemma3.reset()
    ours = gemma3.generate(ids, N_NEW, temperature=0.0, speculative=False)
    assert ours.token_ids == oracle.greedy(ids, N_NEW)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, gemma3) -> dict[int, object]:
    d = tmp_path_factory.mktemp("gemma3-adapters")
    # untrained: the exit layer's own attention block (a local layer's weights, run as the
    # adapter's global attention): drafts are sometimes right, so acceptance paths are exercised
    return {exit: make_adapter(gemma3, d / f"exit{exit}.gguf", exit) for exit in (2, 16)}


# (exit layer, tau, gamma): tau=0 forces gamma drafts per cycle; None is the controller
SETTINGS = [(2, 0.0, 4), (16, 0.0, 6), (16, 0.0, 1), (2, 0.0, 6), (16, None, 4), (16, 0.0, 3)]


def test_greedy_kangaroo_equals_plain(gemma3, adapters):
    prompts = [question_text(q) for q in load_questions(len(SETTINGS) - 1)]
    prompts.append(long_prompt(gemma3, WINDOW - 40))  # drafts and verification across the window
    accepted_multi = 0
    for prompt, (exit, tau, gamma) in zip(prompts, SETTINGS):
        gemma3.load_adapter(adapters[exit])
        gemma3.reset()
        plain = gemma3.generate(prompt, 96, speculative=False)
        gemma3.reset()
        spec = gemma3.generate(prompt, 96, speculative=True, tau=tau, gamma=gamma)
        assert spec.token_ids == plain.token_ids, (exit, tau, gamma)
        if tau == 0.0:
            assert spec.stats.cycles > 0 and spec.stats.draft_n >= spec.stats.cycles
        accepted_multi += sum(spec.stats.accepted_hist[2:])
    assert accepted_multi > 0  # the exit-16 adapter drafts well enough for runs of acceptances


def test_known_model_name_is_assembled_once(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    path = models.resolve_model(models.GEMMA3_NAME)
    assert path.parent == tmp_path / "models" and path.name == "gemma-3-270m-q4_k_m.gguf"
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    mtime = path.stat().st_mtime_ns
    assert models.resolve_model(models.GEMMA3_NAME) == path and path.stat().st_mtime_ns == mtime


CHAT = [{"role": "user", "content": "Name a large city in Japan."}]


def test_chat_without_a_template_says_so(gemma3):
    with pytest.raises(ValueError, match="has no chat template.*chat_template='gemma'"):
        gemma3.create_chat_completion(CHAT, max_tokens=4)


def test_chat_with_a_named_template(gemma3_path):
    lm = KangarooLM(gemma3_path, n_ctx=256, n_threads=TEST_THREADS, chat_template="gemma")
    # llama.cpp's own "gemma" format; the BOS comes from tokenization, as for any prompt
    assert lm.apply_chat_template(CHAT) == "<start_of_turn>user\nName a large city in Japan.<end_of_turn>\n" \
                                           "<start_of_turn>model\n"
    r = lm.create_chat_completion(CHAT, max_tokens=8, speculative=False)
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    assert r["usage"]["completion_tokens"] > 0
    with pytest.raises(ValueError, match="unknown chat template name 'gemma9'.*chatml"):
        KangarooLM(gemma3_path, n_ctx=256, n_threads=TEST_THREADS, chat_template="gemma9").apply_chat_template(CHAT)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kangaroo_edge.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_generate_by_known_name():
    r = cli("generate", "-m", models.GEMMA3_NAME, "-p", "The three primary colors are", "-n", "12", "-c", "512",
            "-t", str(TEST_THREADS))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "tokens/s" in r.stderr
    # --chat on a model without a template: one clear line, no traceback
    r = cli("generate", "-m", models.GEMMA3_NAME, "--chat", "-p", "Hi", "-n", "4", "-c", "512", "-t", "1")
    assert r.returncode != 0 and "has no chat template" in r.stderr and "Traceback" not in r.stderr
    r = cli("generate", "-m", models.GEMMA3_NAME, "--chat", "--chat-template", "gemma", "-p", "Hi", "-n", "4",
            "-c", "512", "-t", "1", "--json")
    assert r.returncode == 0, r.stderr


def test_missing_gemma_tensor_is_an_error(tmp_path, gemma3_path):
    bad = copy_gguf(gemma3_path, tmp_path / "holes.gguf", drop_tensors=["blk.4.post_ffw_norm.weight"])
    with pytest.raises(EngineError, match=r"holes\.gguf.*'blk\.4\.post_ffw_norm\.weight' is missing"):
        KangarooLM(bad, n_ctx=256, n_threads=1)


def test_bench_completion_prompts(tmp_path):
    """bench on a model without a chat template: --completion continues the questions as text; our
    plain decoding gives llama.cpp's tokens. Without --completion it says why it cannot chat."""
    js = tmp_path / "b.json"
    common = ["bench", "-m", models.GEMMA3_NAME, "--questions", str(QUESTIONS), "--limit", "2",
              "--max-new-tokens", "8", "--systems", "llamacpp_plain,ours_plain", "-t", "1", "--no-progress"]
    r = cli(*common, "--completion", "--json", str(js))
    assert r.returncode == 0, r.stderr
    res = json.loads(js.read_text())
    assert res["config"]["prompt_format"] == "completion"
    assert "as raw text to continue" in r.stdout  # the report says how the questions were put
    assert [q["match_plain_vs_llamacpp"] for q in res["questions"]] == [True, True]
    r = cli(*common)
    assert r.returncode != 0 and "has no chat template" in r.stderr and "Traceback" not in r.stderr


def test_training_continues_prompts_as_text(gemma3, tmp_path):
    """`kangaroo-edge train --completion`: a model without a chat template gets training answers
    that continue each prompt as raw text (the bench's completion-style prompts), its own greedy
    continuation; without a prompts file the pipeline says why it cannot write its own prompts."""
    from kangaroo_edge.train.jsonl import read_jsonl
    from kangaroo_edge.train.pipeline import Pipeline, TrainConfig
    from kangaroo_edge.train.prompts import run_prompts_stage
    from kangaroo_edge.train.responses import run_responses_stage

    texts = ["The three primary colours of light are", "A short history of the bicycle:"]
    (tmp_path / "prompts.txt").write_text("\n".join(texts) + "\n")
    run_prompts_stage(tmp_path, None, tmp_path / "prompts.txt", progress=False)
    run_responses_stage(gemma3, tmp_path, max_new_tokens=8, sampled_fraction=0.0, progress=False, completion=True)
    rows = read_jsonl(tmp_path / "responses.jsonl")
    assert len(rows) == 2
    for text, row in zip(texts, rows):
        ids = gemma3.tokenize(completion_prompt(text))
        assert row["prompt_token_ids"] == ids
        gemma3.reset()
        assert row["response_token_ids"] == list(gemma3.generate(ids, 8, temperature=0.0, speculative=False).token_ids)
    with pytest.raises(ValueError, match="needs a prompts file"):
        Pipeline(TrainConfig(exit_layer=2, completion=True, workdir=str(tmp_path / "w"), preset="smoke"),
                 lm=gemma3).run()
    assert not (tmp_path / "w").exists()

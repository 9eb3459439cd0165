"""The features stage's torch backend (train/torch_teacher.py) against the engine: in float32 on
tiny models of every architecture it runs (the same states, up to rounding), in bfloat16 on the
real default model and on Gemma 3 past its sliding window (what the adapter learns from: the same
to 3 decimals of cosine, the teacher's greedy token the same almost everywhere), and through
`kangaroo-edge train --features-backend`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kangaroo_edge import KangarooLM
from kangaroo_edge.train.base_model import load_lm_head
from kangaroo_edge.train.feature_shards import FeatureShards
from kangaroo_edge.train.features import extract
from kangaroo_edge.train.pipeline import Pipeline, TrainConfig
from kangaroo_edge.train.torch_teacher import TORCH_TEACHER_ARCHS, TorchTeacher
from tiny_models import make_tiny_gguf

from conftest import chat_prompt, load_questions


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# biases, q/k norms, both RoPEs, RoPE factors; Gemma 3's post norms, GeGLU, scaled embeddings and
# local layers (the tiny one's window is 8 positions: 48 slide far past it)
@pytest.mark.parametrize("arch", ["llama", "llama3", "qwen2", "qwen3", "gemma3"])
def test_float32_teacher_computes_the_engines_states(tmp_path, arch):
    path = make_tiny_gguf(tmp_path, arch, "f32")
    lm = KangarooLM(path, n_ctx=256, n_threads=1, device="cpu")
    ids = list(np.random.default_rng(0).integers(0, lm.n_vocab, 48))
    want_hidden, want_normed = extract(lm, ids, 1)
    hidden, normed = TorchTeacher(path, dtype=torch.float32).extract(ids, 1)
    for got, want in ((hidden, want_hidden), (normed, want_normed)):
        # the engine keeps keys and values in f16: ~1e-4 of the largest value apart, where a wrong RoPE,
        # norm or bias would be 1e-1
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_bfloat16_teacher_on_the_default_model(smollm_path):
    lm = KangarooLM(smollm_path, n_ctx=1024, n_threads=1, device="cpu")
    prompt = lm.tokenize(chat_prompt(lm, load_questions(1)[0]))
    ids = prompt + lm.generate(prompt, max_tokens=96, speculative=False).token_ids
    want_hidden, want_normed = extract(lm, ids, 2)
    hidden, normed = TorchTeacher(smollm_path, dtype=torch.bfloat16).extract(ids, 2)
    assert cosines(hidden, want_hidden).min() > 0.999
    assert cosines(normed, want_normed).mean() > 0.999
    head = load_lm_head(smollm_path).numpy()
    agreement = ((normed @ head.T).argmax(1) == (want_normed @ head.T).argmax(1)).mean()
    assert agreement > 0.95, agreement


def test_bfloat16_teacher_on_gemma3_past_its_window(gemma3_path, tmp_path):
    # 900 tokens of real text: the local layers see only the last 512 of them; the same pass without
    # the window drifts away after position 512 (measured: cosine 0.66, greedy token 26% the same)
    lm = KangarooLM(gemma3_path, n_ctx=1024, n_threads=1, device="cpu")
    text = " ".join(q["turns"][0] for q in load_questions(40))
    ids = lm.tokenize(text)[:900]
    assert len(ids) == 900
    want_hidden, want_normed = extract(lm, ids, 2)
    hidden, normed = TorchTeacher(gemma3_path, dtype=torch.bfloat16).extract(ids, 2)
    assert cosines(hidden, want_hidden).min() > 0.999
    assert cosines(normed[512:], want_normed[512:]).mean() > 0.99
    head = load_lm_head(gemma3_path).numpy()
    agreement = ((normed[512:] @ head.T).argmax(1) == (want_normed[512:] @ head.T).argmax(1)).mean()
    assert agreement > 0.9, agreement


def test_train_features_backend_torch(smollm_path, tmp_path):
    lm = KangarooLM(smollm_path, n_ctx=1024, n_threads=1, device="cpu")
    prompt = lm.tokenize(chat_prompt(lm, load_questions(1)[0]))
    row = {"key": "q0/greedy", "prompt_token_ids": prompt, "response_token_ids": lm.tokenize("Sure.", add_special=False)}
    (tmp_path / "responses.jsonl").write_text(json.dumps(row) + "\n")
    cfg = TrainConfig(exit_layer=2, workdir=str(tmp_path), features_backend="torch", n_threads=1, progress=False)
    report = Pipeline(cfg, lm=lm).run(("features",))["features"]
    assert report["n_new"] == 1
    seq = FeatureShards(tmp_path / "features").sequence(0)
    assert seq.tokens.tolist() == row["prompt_token_ids"] + row["response_token_ids"]
    hidden, _ = TorchTeacher(smollm_path).extract(seq.tokens.tolist(), 2)
    np.testing.assert_allclose(np.asarray(seq.exit_hidden, np.float32), hidden, rtol=1e-2, atol=1e-2)

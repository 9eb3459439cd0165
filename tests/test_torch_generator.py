"""The responses stage's torch backend (train/torch_generator.py): many answers at once from the
model in torch, with a KV cache per sequence, continuous batching and moved slots.

Its answers are not the engine's bits (dequantized weights, bf16 products where native), so the
check is against the same model's full forward pass, in float32: every answer token must be what
teacher-forcing the answer through TorchTeacher makes the argmax (up to the near ties that the
order of the sums flips). A sequence that reads the
wrong cells (a wrong position, a moved slot's stale cells, another sequence's) would follow
another context and fall far below that."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from kangaroo_edge import KangarooLM
from kangaroo_edge.batch import GenJob
from kangaroo_edge.train.pipeline import Pipeline, TrainConfig
from kangaroo_edge.train.responses import prompt_ids
from kangaroo_edge.train.torch_generator import TorchGenerator, sample_top_p
from kangaroo_edge.types import SamplingParams

from conftest import TEST_THREADS, load_questions


@pytest.fixture(scope="module")
def lm(smollm_path):
    torch.set_num_threads(TEST_THREADS)
    return KangarooLM(smollm_path, n_ctx=1024, n_threads=TEST_THREADS, device="cpu")


@pytest.fixture(scope="module")
def generator(lm):
    # float32: then the cached steps and the full forward pass differ only in the order of their sums
    with TorchGenerator(lm, n_seq=3, dtype=torch.float32) as g:
        yield g


def teacher_agreement(g: TorchGenerator, prompt: list[int], answer: list[int]) -> np.ndarray:
    """Per answer token: is it the argmax of the full forward pass over prompt + answer?"""
    _, normed = g.model.extract(prompt + answer, 1)
    logits = torch.from_numpy(normed[len(prompt) - 1:-1]).to(g.dtype) @ g.head.T
    return logits.float().argmax(-1).numpy() == np.array(answer)


def test_batched_answers_follow_the_models_forward_pass(lm, generator):
    # 8 jobs through 3 slots: prompts of 20 to ~600 tokens, budgets that end them at different steps,
    # so sequences join mid-run, are prefilled in groups and take over the slots of those that ended
    questions = [q["turns"][0] for q in load_questions(7)] + ["Summarize: " + " ".join(["The river rose."] * 120)]
    jobs = [GenJob(f"q{i}", tuple(prompt_ids(lm, q)), 24 + 17 * (i % 4)) for i, q in enumerate(questions)]
    results = {r.key: r for r in generator.generate(jobs)}
    assert sorted(results) == sorted(j.key for j in jobs)
    agree = []
    for job in jobs:
        r = results[job.key]
        assert 0 < len(r.token_ids) <= job.max_new_tokens
        assert r.finish_reason == ("length" if len(r.token_ids) == job.max_new_tokens else "stop")
        assert r.text == lm.detokenize(r.token_ids)
        agree.append(teacher_agreement(generator, list(job.prompt_ids), r.token_ids))
    agreement = np.concatenate(agree).mean()
    # a sequence on the wrong cells drops far lower (a moved slot without its cells: 72%; every
    # position one off: 97%)
    assert agreement > 0.99, agreement


def test_gemma3_answers_slide_past_the_local_layers_window(gemma3_path):
    # Gemma 3's local layers see the last 512 positions: prompts of 860-900 tokens, then 40 cached
    # steps that must hide ~400 cells from those layers; two slots for three jobs (steps without the
    # window: 72% of these tokens agree)
    gemma = KangarooLM(gemma3_path, n_ctx=1024, n_threads=TEST_THREADS, device="cpu")
    text = gemma.tokenize(" ".join(q["turns"][0] for q in load_questions(40)))
    jobs = [GenJob(f"j{i}", tuple(text[50 * i:50 * i + n]), 40) for i, n in enumerate((860, 880, 900))]
    with TorchGenerator(gemma, n_seq=2, dtype=torch.float32) as g:
        results = {r.key: r for r in g.generate(jobs)}
        agree = [teacher_agreement(g, list(j.prompt_ids), results[j.key].token_ids) for j in jobs]
    assert all(len(results[j.key].token_ids) == 40 for j in jobs)
    agreement = np.concatenate(agree).mean()
    assert agreement > 0.98, agreement


def test_answers_end_at_the_models_end_of_turn(lm, generator):
    job = GenJob("short", tuple(prompt_ids(lm, "What is the capital of France? Answer in one sentence.")), 200)
    (r,) = generator.generate([job])
    assert r.finish_reason == "stop" and len(r.token_ids) < 200
    assert not any(lm.engine.is_eog(t) for t in r.token_ids)


def test_a_seeded_sampled_answer_is_reproducible(lm, generator):
    ids = tuple(prompt_ids(lm, load_questions(1)[0]["turns"][0]))
    def sampled(seed):
        job = GenJob("s", ids, 40, SamplingParams(temperature=0.7, top_p=0.95, seed=seed))
        return next(iter(generator.generate([job]))).token_ids
    (greedy,) = [r.token_ids for r in generator.generate([GenJob("g", ids, 40)])]
    a, b, c = sampled(1), sampled(1), sampled(2)
    assert a == b
    assert a != c or a != greedy


def test_top_p_then_temperature_keeps_the_intended_distribution():
    logits = torch.tensor([3.0, 2.5, 2.0, 1.0, 0.0, -1.0, -3.0], dtype=torch.float64)
    params = SamplingParams(temperature=0.7, top_p=0.95, seed=0)
    rng = torch.Generator().manual_seed(0)
    n = 6000
    counts = np.bincount([sample_top_p(logits, params, rng) for _ in range(n)], minlength=len(logits))
    # llama.cpp's order: the most probable tokens reaching 0.95 of the untempered mass (here 4; top-p
    # after the temperature would keep 3), then the temperature over them
    keep = 4
    assert logits.softmax(-1)[:keep - 1].sum() < 0.95 <= logits.softmax(-1)[:keep].sum()
    assert (logits / 0.7).softmax(-1)[:keep - 1].sum() >= 0.95
    assert counts[keep:].sum() == 0 and counts[keep - 1] > 0
    want = (logits[:keep] / 0.7).softmax(-1).numpy()
    assert chisquare(counts[:keep], want * n).pvalue > 1e-3
    # negative control: the tempered distribution without top-p, which the counts must reject
    untruncated = (logits / 0.7).softmax(-1).numpy()
    assert chisquare(counts, untruncated * n).pvalue < 1e-6


@pytest.mark.parametrize("job, message", [
    (GenJob("stop", (1, 2, 3), 8, stop="\n"), "no stop strings"),
    (GenJob("pen", (1, 2, 3), 8, SamplingParams(repeat_penalty=1.1)), "repeat_penalty"),
    (GenJob("long", (1,) * 1000, 100), "exceed the 1024 cells"),
    (GenJob("empty", (), 8), "empty prompt"),
    (GenJob("vocab", (1, 10 ** 7), 8), "outside the vocabulary"),
])
def test_jobs_it_cannot_run_are_refused_before_any_work(generator, job, message):
    ok = GenJob("ok", (1, 2, 3), 4)
    with pytest.raises(ValueError, match=message):
        list(generator.generate([ok, job]))


def test_train_responses_backend_torch(lm, smollm_path, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q["turns"][0]}) + "\n" for q in load_questions(3)))
    cfg = TrainConfig(exit_layer=2, workdir=str(tmp_path / "run"), prompts_file=str(prompts), max_new_tokens=16,
                      responses_backend="torch", n_seq=2, n_threads=TEST_THREADS, progress=False)
    report = Pipeline(cfg, lm=lm).run(("prompts", "responses"))["responses"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    assert report["n_new"] == len(rows) == 3
    assert all(0 < len(r["response_token_ids"]) <= 16 for r in rows)
    again = Pipeline(cfg, lm=lm).run(("responses",))["responses"]
    assert again["n_new"] == 0

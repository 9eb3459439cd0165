"""`kangaroo-edge train`: the four stages on the real default model (kept tiny), their resume,
the feature extractor against the engine's layer-range outputs, and prompt cleaning/dedup."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kangaroo_edge import KangarooLM
from kangaroo_edge.cli import convert as convert_cli
from kangaroo_edge.cli import train as train_cli
from kangaroo_edge.cli.common import UserError
from kangaroo_edge.convert.adapter_gguf import read_adapter_gguf
from kangaroo_edge.train.base_model import load_lm_head
from kangaroo_edge.train.draft_vocab import DEFAULT_SIZE as DRAFT_VOCAB_SIZE
from kangaroo_edge.train.feature_shards import FeatureShards
from kangaroo_edge.train.features import run_features_stage
from kangaroo_edge.train.pipeline import Pipeline, TrainConfig
from kangaroo_edge.train.prompts import (Deduplicator, WriteRequest, clean_text, model_writer, read_jsonl,
                                         read_user_prompts, run_prompts_stage)
from kangaroo_edge.train.responses import run_responses_stage

EXIT = 2
USER_PROMPTS = [  # 6 sequences: the smoke preset's held-out fraction puts 3 on each side
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three uses of a paperclip.",
    "What is 12 times 7?",
    "Give one tip for learning a new language.",
]


@pytest.fixture(scope="module")
def lm(smollm_path):
    """The default model on one thread: on a shared 2-core machine, two engine threads that wait
    on each other while other jobs hold the cores run 10-100x slower than one."""
    return KangarooLM(smollm_path, n_ctx=1024, n_threads=1, device="cpu")


def _parse(module, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.setup_arg_parser(p)
    return p.parse_args(argv)


# ---------------------------------------------------------------- features == engine layer-range outputs

def test_features_equal_engine_layer_range(lm, tmp_path):
    e = lm.engine
    rows = []
    for i, (q, a) in enumerate([("Name a red fruit.", "An apple is a red fruit."), ("Hi!", "Hello! How can I help?")]):
        prompt = lm.tokenize(lm.apply_chat_template([{"role": "user", "content": q}]))
        rows.append({"key": f"t{i}/greedy", "prompt_token_ids": prompt,
                     "response_token_ids": lm.tokenize(a, add_special=False)})
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_features_stage(lm, tmp_path, EXIT, progress=False)
    assert report.n_new == 2

    shards = FeatureShards(tmp_path / "features")
    assert (shards.exit_layer, shards.fingerprint, len(shards)) == (EXIT, e.fingerprint, 2)
    for i, r in enumerate(rows):
        ids = r["prompt_token_ids"] + r["response_token_ids"]
        seq = shards.sequence(i)
        assert seq.tokens.tolist() == ids
        # position len(prompt)-1 predicts the first response token (FeatureShardWriter docstring)
        assert seq.response_start == len(r["prompt_token_ids"]) - 1
        hidden = e.forward(ids, 0, EXIT, 0, "hidden", True)
        normed = e.forward(hidden, EXIT, e.n_layer, 0, "normed", True)
        for got, want in ((seq.exit_hidden, hidden), (seq.final_normed, normed)):
            np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


# ---------------------------------------------------------------- the smoke pipeline, end to end

@pytest.fixture(scope="module")
def smoke_run(lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in USER_PROMPTS))
    cfg = TrainConfig(exit_layer=EXIT, preset="smoke", prompts_file=str(prompts), workdir=str(root / "work"),
                      out=str(root / "adapter.gguf"), max_new_tokens=12, epochs=1, progress=False)
    reports = Pipeline(cfg, lm=lm).run()
    return cfg, reports


def test_smoke_pipeline_writes_a_loadable_adapter(smoke_run, lm):
    cfg, reports = smoke_run
    work = Path(cfg.workdir)
    assert len(read_jsonl(work / "prompts.jsonl")) == len(USER_PROMPTS)
    responses = read_jsonl(work / "responses.jsonl")
    assert len(responses) == len(USER_PROMPTS)
    assert all(1 <= len(r["response_token_ids"]) <= 12 for r in responses)

    meta, tensors = read_adapter_gguf(cfg.out)
    assert meta.exit_layer == EXIT
    assert meta.fingerprint == lm.engine.fingerprint
    assert (meta.tau, meta.gamma) == (pytest.approx(0.6), 6)
    assert tensors["adapter.attn_q.weight"].shape[1] == lm.engine.n_embd
    # the draft head scores what drafts must predict: the model's greedy next token at every
    # training position (all of them here: fewer than 8192), computed from the full head
    shards = FeatureShards(work / "features")
    head = load_lm_head(lm.model_path)
    train_ids, _ = shards.split(cfg.resolved().heldout_frac, cfg.seed)
    greedy = set()
    for i in train_ids:
        seq = shards.sequence(int(i))
        final = torch.from_numpy(np.asarray(seq.final_normed[seq.response_start:], np.float32))
        greedy |= set((final @ head.T).argmax(-1).tolist())
    assert set(meta.draft_vocab) == greedy
    # ... which are the greedy answers' own tokens (a near-tie can fall the other way in f32 than in
    # the engine's kernels), plus at most one per sequence: what follows its last
    answers = {t for i in train_ids for t in responses[int(i)]["response_token_ids"]}
    assert len(answers & greedy) >= 0.9 * len(answers) and len(greedy - answers) <= 2 * len(train_ids)

    history = json.loads((work / "adapter.metrics.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(math.isfinite(h["heldout_loss"]) and h["heldout_positions"] > 0 for h in history)
    stages = json.loads((work / "stages.json").read_text())
    for stage in ("responses", "features", "fit"):
        assert stages[stage]["tokens_per_s"] > 0 and stages[stage]["seconds"] > 0
    assert reports["fit"]["heldout_loss"] == pytest.approx(history[-1]["heldout_loss"])


def test_rerun_does_no_new_work(smoke_run, lm):
    cfg, _ = smoke_run
    work = Path(cfg.workdir)
    before = {p.name: p.read_bytes() for p in (work / "responses.jsonl", work / "features" / "meta.json",
                                               work / "adapter.pt", Path(cfg.out))}
    reports = Pipeline(cfg, lm=lm).run()
    assert reports["prompts"]["skipped"]
    assert reports["responses"]["n_new"] == 0
    assert reports["features"]["n_new"] == 0
    assert reports["fit"]["epochs_done"] == 0 and not reports["fit"]["exported"]
    after = {p.name: p.read_bytes() for p in (work / "responses.jsonl", work / "features" / "meta.json",
                                              work / "adapter.pt", Path(cfg.out))}
    assert after == before


def test_responses_resume_after_interruption(smoke_run, lm, tmp_path):
    """A responses.jsonl cut mid-line (a crash) resumes with only the missing answers, and greedy
    answers come out the same."""
    cfg, _ = smoke_run
    work = Path(cfg.workdir)
    (tmp_path / "prompts.jsonl").write_bytes((work / "prompts.jsonl").read_bytes())
    lines = (work / "responses.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "responses.jsonl").write_text("".join(lines[:4]) + lines[4][:20])
    report = run_responses_stage(lm, tmp_path, max_new_tokens=12, progress=False)
    assert report.n_new == 2
    resumed = read_jsonl(tmp_path / "responses.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(read_jsonl(work / "responses.jsonl"))


def test_convert_adapter_cli_on_the_smoke_checkpoint(smoke_run, lm, tmp_path):
    cfg, _ = smoke_run
    out = tmp_path / "a.gguf"
    args = _parse(convert_cli, ["adapter", str(Path(cfg.workdir) / "adapter.pt"), "-m", str(lm.model_path),
                                "-o", str(out), "--tau", "0.5", "--gamma", "4"])
    assert convert_cli.main(args) == 0
    meta, _ = read_adapter_gguf(out)
    assert (meta.exit_layer, meta.tau, meta.gamma) == (EXIT, pytest.approx(0.5), 4)


# ---------------------------------------------------------------- prompts

def test_builtin_prompts_are_cleaned_and_deduplicated(tmp_path):
    """A scripted writer that repeats itself: exact and near duplicates and junk are dropped, and a
    re-run with more prompts continues from the attempt log instead of starting over."""
    volcano = " the best way to explain to a small child how a volcano forms deep underground and why it erupts with lava?"
    inflation = " the main causes of inflation in a modern economy, and what can a central bank do to slow it down?"
    outputs = [volcano, volcano, volcano.replace("small", "young"), "\n",
               " bees make honey from the nectar they collect from many different kinds of flowers in spring?",
               inflation, inflation.replace("modern ", ""),
               " should I train for my first marathon race if I only have twelve weeks and run three days a week?"]
    calls = []

    def write_one(req: WriteRequest):
        calls.append(req)
        text = outputs[len(calls) - 1] if len(calls) <= len(outputs) else \
            f" question number {len(calls)} in this test, which is unlike any other question {len(calls) ** 2}?"
        if req.chat:  # passage tasks: a paragraph
            text = f"Paragraph {len(calls)} tells a distinct story about item {len(calls) * 7} in the world."
        return text, 8, "stop"

    def write(reqs: list[WriteRequest]):
        return [write_one(r) for r in reqs]

    report = run_prompts_stage(tmp_path, 4, write=write, progress=False)
    rows = read_jsonl(tmp_path / "prompts.jsonl")
    assert len(rows) == report.n_prompts == 4
    norm = [" ".join(r["prompt"].lower().split()) for r in rows]
    assert len(set(norm)) == 4 and report.duplicates >= 1
    dedup = Deduplicator()
    assert all(dedup.add(r["prompt"]) for r in rows)  # no near-duplicates among the kept ones
    n_calls = len(calls)  # model requests: one per attempt, three for RAG, none for fixed translations
    assert sum(len(r["texts"]) for r in read_jsonl(tmp_path / "prompts.raw.jsonl")) == n_calls

    assert run_prompts_stage(tmp_path, 4, write=write, progress=False).skipped
    assert len(calls) == n_calls
    more = run_prompts_stage(tmp_path, 6, write=write, progress=False)
    rows6 = read_jsonl(tmp_path / "prompts.jsonl")
    assert more.n_prompts == 6 and rows6[:4] == rows  # ids and order kept
    assert len(calls) == sum(len(r["texts"]) for r in read_jsonl(tmp_path / "prompts.raw.jsonl"))
    assert more.n_new >= 2


def test_builtin_prompts_with_the_model(lm, tmp_path):
    """The real model writes built-in prompts (short budgets to keep the test quick)."""
    write = model_writer(lm)
    short = lambda reqs: write([replace(r, max_tokens=min(r.max_tokens, 20)) for r in reqs])  # noqa: E731
    report = run_prompts_stage(tmp_path, 2, write=short, progress=False)
    rows = read_jsonl(tmp_path / "prompts.jsonl")
    assert 1 <= len(rows) <= 2 and report.n_tokens > 0
    assert all(r["source"] == "builtin-v2" and len(r["prompt"]) >= 12 for r in rows)


def test_deduplicator_exact_and_near():
    d = Deduplicator()
    assert d.add("How do volcanoes form, and why do they erupt?")
    assert not d.add("how do volcanoes form and why do they erupt")             # same normalized text
    assert not d.add("How do volcanoes form, and why do they erupt so often?")  # near duplicate
    assert d.add("How do bees make honey?")
    assert (d.n_exact, d.n_near) == (1, 1)


def test_clean_text():
    assert clean_text('Sure! Here is a question: "What is a black hole?"', True) == "What is a black hole?"
    assert clean_text("Question: How do magnets work?\n\nMagnets work by...", True) == "How do magnets work?"
    assert clean_text("Bees pollinate flowers. They also make hon", False, truncated=True) == "Bees pollinate flowers."
    assert clean_text("ok", True) is None


def test_user_prompt_files(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a"}, {"instruction": "b", "input": "c"}, {"turns": ["d", "e"]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "f"}]}]))
    assert read_user_prompts(jsonl) == ["a", "b\n\nc", "d", "f"]
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert read_user_prompts(txt) == ["first prompt", "second prompt"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no known field"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_user_prompts(bad)


def test_train_cli_arguments(tmp_path):
    args = _parse(train_cli, ["--exit-layer", "2", "--preset", "smoke", "--stage", "features", "--epochs", "3",
                              "--prompts", "x.txt", "--workdir", str(tmp_path)])
    cfg = train_cli.config_from_args(args).resolved()
    assert (cfg.exit_layer, cfg.epochs, cfg.max_new_tokens, cfg.n_prompts) == (2, 3, 32, 16)
    assert args.stage == ("features",)
    assert _parse(train_cli, ["--exit-layer", "2", "--stage", "prompts,responses"]).stage == ("prompts", "responses")
    assert _parse(train_cli, ["--exit-layer", "2"]).stage == ("prompts", "responses", "features", "fit")
    with pytest.raises(UserError, match="--sampled-fraction"):
        train_cli.config_from_args(_parse(train_cli, ["--exit-layer", "2", "--sampled-fraction", "2"]))
    # the draft head's size is the fit's vocabulary: one number
    small = train_cli.config_from_args(_parse(train_cli, ["--exit-layer", "2", "--draft-vocab", "512",
                                                          "--workdir", str(tmp_path)]))
    assert Pipeline(small).fit_config().draft_vocab == 512
    assert not Pipeline(small).fit_config().prompt_positions
    with_prompts = train_cli.config_from_args(_parse(train_cli, ["--exit-layer", "2", "--prompt-positions",
                                                                 "--workdir", str(tmp_path)]))
    assert Pipeline(with_prompts).fit_config().prompt_positions
    assert Pipeline(cfg).fit_config().draft_vocab == DRAFT_VOCAB_SIZE
    with pytest.raises(UserError, match="--draft-vocab"):
        train_cli.config_from_args(_parse(train_cli, ["--exit-layer", "2", "--draft-vocab", "-1"]))


def test_bad_exit_layer_is_refused_before_any_file_is_written(lm, tmp_path):
    with pytest.raises(ValueError, match=r"exit layer must be an integer in \[1, 29\]"):
        Pipeline(TrainConfig(exit_layer=30, workdir=str(tmp_path / "w")), lm=lm).run()
    assert not (tmp_path / "w").exists()


def test_sampled_fraction_adds_sampled_answers():
    from kangaroo_edge.train.responses import plan_jobs

    prompts = [{"id": f"u{i:06d}", "prompt": "x"} for i in range(200)]
    assert [m for _, m in plan_jobs(prompts, 0.0, 0)] == ["greedy"] * 200
    assert len(plan_jobs(prompts, 1.0, 0)) == 400
    n_sampled = sum(m == "sampled" for _, m in plan_jobs(prompts, 0.25, 0))
    assert 25 <= n_sampled <= 75 and plan_jobs(prompts, 0.25, 0) == plan_jobs(prompts, 0.25, 0)

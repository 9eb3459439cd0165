"""Resuming the data stages: an interrupted features stage, resumed, writes the same shards as an
uninterrupted one (the responses stage's resume is in test_batch.py, the prompts stage's
in test_train_prompts.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kangaroo_edge import KangarooLM
from kangaroo_edge.train import features as features_mod
from kangaroo_edge.train.features import run_features_stage

EXIT = 2
ANSWERS = [("Name a red fruit.", "An apple is a red fruit."), ("Hi!", "Hello! How can I help you today?"),
           ("What is 2 + 2?", "2 + 2 is 4."), ("Say a color.", "Blue."), ("Name a planet.", "Mars is a planet."),
           ("Count to three.", "One, two, three.")]


@pytest.fixture(scope="module")
def lm(smollm_path):
    return KangarooLM(smollm_path, n_ctx=512, n_threads=1, device="cpu")


def _responses(lm, directory):
    directory.mkdir()
    rows = []
    for i, (q, a) in enumerate(ANSWERS):
        prompt = lm.tokenize(lm.apply_chat_template([{"role": "user", "content": q}]))
        rows.append({"key": f"t{i}/greedy", "prompt_token_ids": prompt,
                     "response_token_ids": lm.tokenize(a, add_special=False)})
    (directory / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sum(len(r["prompt_token_ids"]) + len(r["response_token_ids"]) for r in rows)


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted((directory / "features").iterdir())}


def test_interrupted_features_stage_resumes_to_the_same_shards(lm, tmp_path, monkeypatch):
    n_tokens = _responses(lm, tmp_path / "full")
    _responses(lm, tmp_path / "cut")
    shard = n_tokens // 3  # about three shards: the interruption falls after the first one
    full = run_features_stage(lm, tmp_path / "full", EXIT, shard_tokens=shard, progress=False)
    assert full.n_new == len(ANSWERS)

    real, calls = features_mod.extract, []

    def dies_on_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C (a kill loses the same buffered sequences)
        return real(*args)
    monkeypatch.setattr(features_mod, "extract", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        run_features_stage(lm, tmp_path / "cut", EXIT, shard_tokens=shard, progress=False)
    stored = json.loads((tmp_path / "cut" / "features" / "meta.json").read_text())["n_sequences"]
    # whole shards only: as many sequences as the uninterrupted run's shards hold within the 4 done
    cuts = np.cumsum([s["n_sequences"] for s in json.loads((tmp_path / "full" / "features" / "meta.json").read_text())["shards"]])
    assert stored == max(c for c in [0, *cuts] if c <= 4) > 0
    monkeypatch.setattr(features_mod, "extract", real)

    resumed = run_features_stage(lm, tmp_path / "cut", EXIT, shard_tokens=shard, progress=False)
    assert resumed.n_new == len(ANSWERS) - stored
    assert _files(tmp_path / "cut") == _files(tmp_path / "full")


def test_an_archived_data_job_restores_its_complete_lines(tmp_path):
    """kangaroo_edge.train.archive: a fresh machine continues a data job from the committed archive."""
    from kangaroo_edge.train.archive import restore, save

    job = tmp_path / "job"
    job.mkdir()
    (job / "run.json").write_text('{"fingerprint": "abc"}')
    (job / "prompts.raw.jsonl").write_text('{"index": 0}\n{"index": 1}\n{"ind')  # a line being written
    (job / "responses.jsonl").write_text('{"key": "b0/greedy", "response_token_ids": [1, 2]}\n')
    assert save(job, tmp_path / "archive") == {"prompts.raw.jsonl": 2, "responses.jsonl": 1}
    first = (tmp_path / "archive" / "prompts.raw.jsonl.gz").read_bytes()
    save(job, tmp_path / "archive")
    assert (tmp_path / "archive" / "prompts.raw.jsonl.gz").read_bytes() == first  # same lines, same bytes

    fresh = tmp_path / "fresh"
    assert restore(tmp_path / "archive", fresh) == {"prompts.raw.jsonl": 2, "responses.jsonl": 1}
    assert (fresh / "prompts.raw.jsonl").read_text() == '{"index": 0}\n{"index": 1}\n'
    assert (fresh / "responses.jsonl").read_text() == (job / "responses.jsonl").read_text()
    assert (fresh / "run.json").read_text() == '{"fingerprint": "abc"}'

    (fresh / "responses.jsonl").write_text('{"key": "a"}\n{"key": "b"}\n')  # the workdir went on
    with pytest.raises(ValueError, match="ahead"):
        restore(tmp_path / "archive", fresh)

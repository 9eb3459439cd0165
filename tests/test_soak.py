"""Long use of one model: a reduced soak run (benchmarks/soak.py) with a bound on memory growth,
and streams interrupted early that leave the model exactly as usable as a fresh one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adapters import make_adapter
from conftest import REPO
from kangaroo_edge import KangarooLM

# One engine thread: these tests check behaviour, not speed, and a second thread only adds
# spin-waiting on a busy machine.
THREADS = 1

SOAK_GENERATIONS = 100
SOAK_WARMUP = 120  # one round of soak.py's cycle: every graph shape is built before the first sample
# Resident memory may grow by at most this much over the 100 generations after the warm-up.
# A leak of one logits vector (49152 floats, 192 KiB) per generation would add 19 MB and fail,
# so would a leaked graph or KV buffer; docs/reliability.md has the measured growth.
MAX_GROWTH_MB = 8.0


def test_reduced_soak_memory_is_flat(tmp_path, smollm_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--generations", str(SOAK_GENERATIONS),
         "--warmup", str(SOAK_WARMUP), "--every", "25", "--max-tokens", "4", "-t", str(THREADS),
         "--model", str(smollm_path), "--max-growth-mb", str(MAX_GROWTH_MB), "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    print(json.dumps(summary["rss_mb"]), summary["growth_mb"])
    assert summary["generations"] == SOAK_GENERATIONS and summary["tokens"] > SOAK_GENERATIONS
    assert summary["growth_mb"] <= MAX_GROWTH_MB, summary["samples"]
    assert proc.returncode == 0


PROMPT = "Once upon a time, in a land far away,"
NEXT = "The capital of Australia is"


def fresh_output(path, adapter=None):
    lm = KangarooLM(path, n_ctx=256, n_threads=THREADS, device="cpu")
    if adapter is not None:
        lm.load_adapter(adapter)
    return lm.generate(NEXT, max_tokens=16).token_ids


@pytest.fixture(scope="module")
def adapter(smollm_path, tmp_path_factory):
    lm = KangarooLM(smollm_path, n_ctx=64, n_threads=THREADS, device="cpu")
    return make_adapter(lm, tmp_path_factory.mktemp("adapter") / "a.gguf", 2)


@pytest.mark.parametrize("kangaroo", [False, True])
@pytest.mark.parametrize("how", ["close", "break", "drop"])
def test_interrupted_stream_leaves_the_model_as_fresh(smollm_path, adapter, kangaroo, how):
    expected = fresh_output(smollm_path, adapter if kangaroo else None)
    lm = KangarooLM(smollm_path, n_ctx=256, n_threads=THREADS, device="cpu")
    if kangaroo:
        lm.load_adapter(adapter)
    if how == "close":
        stream = lm.generate(PROMPT, max_tokens=64, stream=True)
        next(stream)
        assert next(stream).finish_reason is None  # interrupted, not finished
        stream.close()
    elif how == "break":
        for i, _ in enumerate(lm.generate(PROMPT, max_tokens=64, stream=True)):
            if i == 2:
                break  # nothing else holds the stream: CPython closes it right here
    else:
        stream = lm.generate(PROMPT, max_tokens=64, stream=True)
        next(stream)
        # a stream left open keeps the model busy, with a clear error, until it is closed
        with pytest.raises(RuntimeError, match="generating"):
            lm.generate(NEXT, max_tokens=2)
        del stream  # the last reference: CPython closes the generator
    r = lm.generate(NEXT, max_tokens=16)
    assert r.token_ids == expected
    assert r.draft.speculative is kangaroo

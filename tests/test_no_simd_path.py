"""A CPU without a SIMD path of our kernels (ARM, x86 without AVX2), forced here on x86 with
KE_KERNEL_ISA=none: one-token steps and verification take ggml's own kernels, not our portable C++
(which serves only the kernels' tests), the row-exactness probe deciding which weights verification
multiplies row by row. Plain decoding still equals llama.cpp, and Kangaroo with drafting forced
(tau=0) equals plain decoding. The kernels' path is chosen once per process: the checks run in a
child process with the variable set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import TEST_N_CTX, TEST_THREADS

N_PROMPTS = 4
N_NEW = 64

CHILD = textwrap.dedent(f"""
    import sys, tempfile
    from pathlib import Path
    sys.path.insert(0, {os.path.dirname(__file__)!r})
    from conftest import chat_prompt, load_questions
    from kangaroo_edge import KangarooLM, _native
    from kangaroo_edge.cli.info import matmul_paths
    from kangaroo_edge.llamacpp import LlamaCpp
    from kangaroo_edge.models import default_model_path
    from adapters import make_adapter

    assert _native.kernels.best_isa() == "portable" and not _native.kernels.enabled()
    lm = KangarooLM(default_model_path(), n_ctx={TEST_N_CTX}, n_threads={TEST_THREADS}, device="cpu")
    paths = matmul_paths(lm.engine)
    assert paths and all("no SIMD kernel path" in p for p in paths.values()), paths
    oracle = LlamaCpp(lm.model_path, {TEST_N_CTX}, {TEST_THREADS})
    lm.load_adapter(make_adapter(lm, Path(tempfile.mkdtemp()) / "a.gguf", 2))
    for i, q in enumerate(load_questions({N_PROMPTS})):
        prompt = chat_prompt(lm, q)
        lm.reset()
        plain = lm.generate(prompt, {N_NEW}, temperature=0.0, speculative=False)
        assert plain.token_ids == oracle.greedy(plain.prompt_token_ids, {N_NEW}), q["question_id"]
        lm.reset()
        spec = lm.generate(prompt, {N_NEW}, speculative=True, tau=0.0, gamma=2 + 2 * (i % 3))
        assert spec.stats.cycles > 0 and spec.token_ids == plain.token_ids, q["question_id"]
    print("OK")
""")


def test_without_a_simd_path_ggmls_kernels_decode_as_llamacpp_and_kangaroo_as_plain():
    env = dict(os.environ, KE_KERNEL_ISA="none")
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-4000:]

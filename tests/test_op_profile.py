"""The step profile (Engine.set_profiling, benchmarks/step_profile.py) and reading a model's
fingerprint from a file: diagnostics that must not change what they observe."""

import pytest

from kangaroo_edge import KangarooLM, _native

from conftest import TEST_N_CTX, TEST_THREADS, chat_prompt, load_questions


def test_profiling_times_every_node_and_changes_no_token(smollm_path):
    lm = KangarooLM(smollm_path, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS, device="cpu")  # no adapter
    prompt = chat_prompt(lm, load_questions(1)[0])
    plain = lm.generate(prompt, 12, speculative=False).token_ids
    e = lm.engine
    lm.reset()
    e.clear_op_profile()
    e.set_profiling(True)
    try:
        profiled = lm.generate(prompt, 12, speculative=False).token_ids
    finally:
        e.set_profiling(False)
    assert profiled == plain and len(plain) == 12
    graphs, by_kind = e.op_profile()
    assert graphs == len(plain)  # the prefill, then one graph per step after the first token
    n_layer = lm.hparams.n_layer
    # every layer multiplies by its seven Q4_1 weights in every graph; the tied head is Q8_0 (ggml's
    # MUL_MAT, or our kernels' CUSTOM op where ggml's one-row kernels round otherwise)
    products = lambda t: sum(by_kind.get(f"{op} {t}", (0, 0.0))[0] for op in ("MUL_MAT", "CUSTOM"))  # noqa: E731
    assert products("q4_1") == 7 * n_layer * graphs
    assert products("q8_0") == graphs
    assert by_kind["RMS_NORM"][0] >= (2 * n_layer + 1) * graphs
    assert all(n > 0 and sec >= 0.0 for n, sec in by_kind.values())
    # profiling off again: nothing more is recorded
    e.clear_op_profile()
    lm.generate(prompt, 4, speculative=False)
    assert e.op_profile() == (0, {})


def test_fingerprint_from_the_file_equals_the_loaded_model(smollm, qwen):
    for lm in (smollm, qwen):
        assert _native.model_fingerprint(str(lm.model_path)) == lm.engine.fingerprint


def test_fingerprint_of_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    with pytest.raises(RuntimeError, match="notes.gguf"):
        _native.model_fingerprint(str(bad))
    with pytest.raises(RuntimeError, match="missing.gguf"):
        _native.model_fingerprint(str(tmp_path / "missing.gguf"))

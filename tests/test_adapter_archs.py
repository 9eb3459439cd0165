"""The Kangaroo adapter on every architecture, with the tiny random models of tiny_models.py: the
engine's adapter (built like the base model's attention: q/k norms where it has them, its global
RoPE, Llama 3's RoPE factors, Gemma's attention scale) computes what the torch adapter used for
training computes, and Kangaroo decoding with forced drafting stays plain decoding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kangaroo_edge import KangarooLM
from kangaroo_edge.convert.adapter_gguf import read_adapter_gguf, tensors_to_adapter_state
from kangaroo_edge.train.adapter_model import AdapterConfig, KangarooAdapter, adapter_logits
from kangaroo_edge.train.base_model import load_lm_head, load_rope_freq_factors, read_base_model_info
from kangaroo_edge.train.init_adapter import write_initial_adapter
from tiny_models import ARCHS, make_tiny_gguf

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

EXIT = 1
N_THREADS = 2
# The engine keeps the adapter's K/V in F16 (2^-11 relative per key and value), the torch adapter
# in f32: observed max |diff| <= 4e-3 on logits of std ~4; a missing q/k norm, RoPE factor or
# scale gives errors of order 1.
TOLERANCE = dict(atol=2e-2, rtol=1e-2)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-adapters")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tiny_root):
    arch = request.param
    path = make_tiny_gguf(tiny_root, arch, "f32")
    lm = KangarooLM(path, n_ctx=256, n_threads=N_THREADS)
    # the next layer's own attention, perturbed so that every tensor (norms too) matters
    adapter = write_initial_adapter(lm, tiny_root / f"{arch}.kangaroo.gguf", EXIT, noise=0.2, seed=1)
    lm.load_adapter(adapter)
    return arch, path, lm, adapter


def test_adapter_has_qk_norms_exactly_where_the_base_does(tiny):
    arch, _, _, adapter = tiny
    _, tensors = read_adapter_gguf(adapter)
    assert ("adapter.attn_q_norm.weight" in tensors) == (arch in ("qwen3", "gemma3"))


def test_engine_adapter_equals_torch_adapter(tiny):
    arch, path, lm, adapter = tiny
    ids = list(range(5, 45))  # 40 positions: past Gemma's 8-position window (the adapter has none)
    hidden = lm.engine.forward(ids, 0, EXIT, 0, "hidden", True)         # [n, n_embd]
    got = lm.engine.adapter_logits(np.ascontiguousarray(hidden), 0)    # [n, n_vocab]

    info = read_base_model_info(path)
    model = KangarooAdapter(AdapterConfig.from_base(info), rope_freq_factors=load_rope_freq_factors(path))
    state = tensors_to_adapter_state(read_adapter_gguf(adapter)[1])
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        normed = model(torch.from_numpy(hidden)[None], torch.arange(len(ids))[None])[0]
        expected = adapter_logits(normed, load_lm_head(path)).numpy()
    assert expected.std() > 1.0
    np.testing.assert_allclose(got, expected, **TOLERANCE)


def test_forced_drafting_equals_plain(tiny):
    _, _, lm, _ = tiny
    prompt = list(range(3, 15))
    for gamma in (1, 3, 5):
        lm.reset()
        plain = lm.generate(prompt, 40, speculative=False)
        lm.reset()
        spec = lm.generate(prompt, 40, speculative=True, tau=0.0, gamma=gamma)
        assert spec.token_ids == plain.token_ids, gamma
        assert spec.stats.cycles > 0


def test_graph_nodes_carry_llama_cpp_names(tiny):
    """Every intermediate of a layer is named as llama.cpp names it ("attn_norm-0"), so a graph can
    be read node by node (Engine.op_profile_by_name); the adapter's block is "<name>-adapter"."""
    arch, _, lm, _ = tiny
    e = lm.engine
    lm.reset()
    e.clear_op_profile()
    e.set_profiling(True)
    try:
        lm.generate(list(range(3, 15)), 8, speculative=True, tau=0.0, gamma=2)
    finally:
        e.set_profiling(False)
    names = set(e.op_profile_by_name())
    per_layer = ["attn_norm", "Qcur", "Kcur", "Vcur", "kq", "kq_soft_max", "kqv", "kqv_out", "attn_out",
                 "ffn_norm", "ffn_up", "ffn_gate", "ffn_out", "l_out"]
    if arch == "gemma3":
        per_layer += ["Qcur_normed", "Kcur_normed", "Qcur_scaled", "attn_post_norm", "sa_out", "ffn_geglu",
                      "ffn_post_norm"]
    else:
        per_layer += ["ffn_inp", "ffn_swiglu"] + (["Qcur_normed", "Kcur_normed"] if arch == "qwen3" else [])
    expected = {f"{n}-{il}" for n in per_layer for il in range(lm.hparams.n_layer)}
    expected |= {"inp_embd", "result_norm", "result_output"}
    expected |= {f"{n}-adapter" for n in ("attn_norm", "Qcur", "Kcur", "Vcur", "kq_soft_max", "attn_out", "sa_out",
                                          "result_norm")}
    assert expected <= names, sorted(expected - names)

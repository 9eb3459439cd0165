"""Kangaroo adapters for tests, written in the real adapter GGUF format: initialised from the
model's own attention block at the exit layer (drafts are sometimes right, so multi-token
acceptance is exercised) or random (drafts are almost always wrong)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kangaroo_edge import KangarooLM
from kangaroo_edge.convert.adapter_gguf import AdapterMeta, adapter_state_to_tensors, write_adapter_gguf
from kangaroo_edge.train.base_model import load_layer_attention


def adapter_meta(lm: KangarooLM, exit_layer: int, tau: float = 0.6, gamma: int = 6,
                 fingerprint: str | None = None) -> AdapterMeta:
    e = lm.engine
    return AdapterMeta(base_arch=e.arch, fingerprint=fingerprint or e.fingerprint, n_embd=e.n_embd,
                       n_head=e.n_head, n_head_kv=e.n_head_kv, head_dim=e.head_dim, rms_eps=e.rms_eps,
                       rope_freq_base=e.rope_freq_base, exit_layer=exit_layer, tau=tau, gamma=gamma)


def make_adapter(lm: KangarooLM, path: Path, exit_layer: int, init: str = "layer", seed: int = 0,
                 noise: float = 0.0, random_std: float = 0.05, **meta_kw) -> Path:
    state = {k: v.numpy() for k, v in load_layer_attention(lm.model_path, exit_layer).items()}
    rng = np.random.default_rng(seed)
    if init == "random":
        state = {k: (np.ones_like(v) if "norm" in k else rng.normal(0, random_std, v.shape)).astype(np.float32)
                 for k, v in state.items()}
    elif noise:
        state = {k: v + rng.normal(0, noise * float(np.std(v)), v.shape).astype(np.float32) for k, v in state.items()}
    write_adapter_gguf(path, adapter_state_to_tensors(state), adapter_meta(lm, exit_layer, **meta_kw))
    return path

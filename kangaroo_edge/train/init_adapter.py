"""Untrained adapters: the starting point of training (the exit layer's own attention block and
the model's output norm), or random weights. Also what tests and benchmarks use when they need
an adapter before a trained one exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..convert.adapter_gguf import (DEFAULT_GAMMA, DEFAULT_TAU, AdapterMeta, adapter_state_to_tensors,
                                    write_adapter_gguf)
from .base_model import load_layer_attention


def adapter_meta_for(hparams, exit_layer: int, tau: float = DEFAULT_TAU, gamma: int = DEFAULT_GAMMA,
                     fingerprint: str | None = None, draft_vocab=None) -> AdapterMeta:
    """Adapter metadata for a loaded model (KangarooLM.hparams)."""
    e = hparams
    return AdapterMeta(base_arch=e.arch, fingerprint=fingerprint or e.fingerprint, n_embd=e.n_embd,
                       n_head=e.n_head, n_head_kv=e.n_head_kv, head_dim=e.head_dim, rms_eps=e.rms_eps,
                       rope_freq_base=e.rope_freq_base, exit_layer=exit_layer, tau=tau, gamma=gamma,
                       draft_vocab=tuple(draft_vocab) if draft_vocab is not None else None)


def write_initial_adapter(lm, path: Path, exit_layer: int, init: str = "layer", seed: int = 0,
                          noise: float = 0.0, random_std: float = 0.05, **meta_kw) -> Path:
    """Writes an untrained adapter GGUF for the model of KangarooLM `lm`.

    init="layer": layer `exit_layer`'s attention weights (optionally with relative Gaussian noise);
    init="random": N(0, random_std) matrices and unit norms."""
    state = {k: v.numpy() for k, v in load_layer_attention(lm.model_path, exit_layer).items()}
    rng = np.random.default_rng(seed)
    if init == "random":
        state = {k: (np.ones_like(v) if "norm" in k else rng.normal(0, random_std, v.shape)).astype(np.float32)
                 for k, v in state.items()}
    elif init != "layer":
        raise ValueError(f"init must be 'layer' or 'random', got {init!r}")
    elif noise:
        state = {k: v + rng.normal(0, noise * float(np.std(v)), v.shape).astype(np.float32) for k, v in state.items()}
    write_adapter_gguf(path, adapter_state_to_tensors(state), adapter_meta_for(lm.hparams, exit_layer, **meta_kw))
    return Path(path)

"""A trained adapter checkpoint (torch, `train/fit.py`) -> an adapter GGUF (`convert/adapter_gguf.py`).

The torch side of export lives here, so that the file format in `convert/` needs no training code.
"""

from __future__ import annotations

from pathlib import Path

from ..convert.adapter_gguf import DEFAULT_GAMMA, DEFAULT_TAU, AdapterMeta, adapter_state_to_tensors, write_adapter_gguf
from .base_model import model_fingerprint, read_base_model_info
from .fit import load_checkpoint


def checkpoint_to_gguf(checkpoint: str | Path, base_model: str | Path, out: str | Path,
                       fingerprint: str | None = None, tau: float = DEFAULT_TAU, gamma: int = DEFAULT_GAMMA,
                       dtype: str = "f16", name: str | None = None,
                       draft_vocab: list[int] | None = None) -> AdapterMeta:
    """Turns a `kangaroo_edge.train.fit` checkpoint into an adapter GGUF. The base model supplies
    the metadata; the fingerprint defaults to the one recorded at training time, the draft
    vocabulary to the one the fit trained the head on (None there: the full vocabulary)."""
    ckpt = load_checkpoint(checkpoint)
    if draft_vocab is None:
        draft_vocab = ckpt.get("draft_vocab")
    info = read_base_model_info(base_model)
    cfg = ckpt["config"]
    base = {"n_embd": info.n_embd, "n_head": info.n_head, "n_head_kv": info.n_head_kv, "head_dim": info.head_dim}
    for key, value in base.items():
        if cfg[key] != value:
            raise ValueError(f"{checkpoint}: adapter {key}={cfg[key]} does not match {base_model} ({value})")
    exit_layer = ckpt["exit_layer"]
    meta = AdapterMeta(
        base_arch=info.arch, fingerprint=fingerprint or ckpt.get("fingerprint") or model_fingerprint(base_model),
        n_embd=info.n_embd, n_head=info.n_head, n_head_kv=info.n_head_kv, head_dim=info.head_dim,
        rms_eps=info.rms_eps, rope_freq_base=info.rope_freq_base, exit_layer=exit_layer, tau=tau, gamma=gamma,
        name=name or f"kangaroo adapter for {Path(base_model).stem}, exit layer {exit_layer}",
        draft_vocab=tuple(draft_vocab) if draft_vocab is not None else None)
    write_adapter_gguf(out, adapter_state_to_tensors(ckpt["state_dict"]), meta, dtype)
    return meta

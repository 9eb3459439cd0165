"""What training needs from the base GGUF: its hyperparameters, its frozen LM head, one layer's
attention weights (to initialise the adapter) and its fingerprint (docs/formats.md).

Torch never holds the whole base model: the features come from the engine, so only the head (and
optionally one attention block) is dequantized here, with the `gguf` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

from .. import _native

ATTN_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output")


@dataclass(frozen=True)
class BaseModelInfo:
    """The engine's reading of a base GGUF (`_native.model_traits`): training derives, never re-reads."""
    path: str
    arch: str             # one of _native.supported_architectures()
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    rms_eps: float
    rope_freq_base: float
    rope_type: str        # "normal" | "neox"
    tied: bool            # no output.weight: the head is token_embd.weight
    has_bias: bool        # q/k/v biases (qwen2)
    has_qk_norm: bool = False     # per-head q/k RMSNorm (qwen3, gemma3)
    attn_scale: float | None = None  # scale of q.k (the engine's: 1/sqrt(head_dim), or Gemma 3's)
    # beyond the llama layout (Gemma 3), for a forward pass outside the engine (torch_teacher)
    post_norms: bool = False          # RMSNorm of the attention and FFN outputs before each residual add
    ffn_activation: str = "silu"      # the gate's: "silu" (SwiGLU) or "gelu" (tanh GELU: GeGLU)
    rope_freq_scale: float = 1.0      # RoPE position scale of the (global) layers
    embd_scale: float = 0.0           # token embeddings times this; 0: none
    final_logit_softcap: float = 0.0  # logits = c * tanh(logits / c) when > 0
    n_swa: int = 0                    # sliding window of the local layers (positions); 0: none
    swa_layers: tuple[bool, ...] = () # [n_layer] True: the layer is local (when n_swa > 0)
    rope_freq_base_swa: float = 10000.0  # RoPE base of the local layers (their scale is 1)

    @property
    def head_tensor_name(self) -> str:
        return "token_embd.weight" if self.tied else "output.weight"


def _tensor(reader: GGUFReader, name: str):
    for t in reader.tensors:
        if t.name == name:
            return t
    return None


def read_base_model_info(path: str | Path, reader: GGUFReader | None = None) -> BaseModelInfo:
    """Hyperparameters of a base GGUF as the engine reads them (its metadata alone); ValueError
    naming the file when the engine would refuse it. `reader` is accepted for callers that hold
    one (the tensors are read through it), not needed."""
    try:
        t = _native.model_traits(str(path))
    except _native.EngineError as e:
        raise ValueError(str(e)) from None
    return BaseModelInfo(path=str(path), arch=t["arch"], n_layer=t["n_layer"], n_embd=t["n_embd"], n_head=t["n_head"],
                         n_head_kv=t["n_head_kv"], head_dim=t["head_dim"], n_vocab=t["n_vocab"], rms_eps=t["rms_eps"],
                         rope_freq_base=t["rope_freq_base"], rope_type=t["rope_type"], tied=t["tied_head"],
                         has_bias=t["qkv_bias"], has_qk_norm=t["qk_norm"], attn_scale=t["kq_scale"],
                         post_norms=t["post_norms"], ffn_activation=t["ffn_activation"],
                         rope_freq_scale=t["rope_freq_scale"], embd_scale=t["embd_scale"],
                         final_logit_softcap=t["final_logit_softcap"], n_swa=t["n_swa"],
                         swa_layers=tuple(t["swa_layers"]), rope_freq_base_swa=t["rope_freq_base_swa"])


def _dequantize(reader: GGUFReader, name: str, path) -> np.ndarray:
    t = _tensor(reader, name)
    if t is None:
        raise ValueError(f"{path}: missing tensor '{name}'")
    # reader data is numpy [ne1, ne0] (torch [out, in]); dequantize keeps that shape in float32
    return np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)  # a copy: the mmap is read-only


def load_lm_head(path: str | Path, reader: GGUFReader | None = None) -> torch.Tensor:
    """The frozen LM head as float32 [n_vocab, n_embd] (token_embd.weight when tied)."""
    reader = reader or GGUFReader(str(path))
    info = read_base_model_info(path, reader)
    head = _dequantize(reader, info.head_tensor_name, path)
    if head.shape != (info.n_vocab, info.n_embd):
        raise ValueError(f"{path}: LM head has shape {head.shape}, expected {(info.n_vocab, info.n_embd)}")
    return torch.from_numpy(head).requires_grad_(False)


def load_rope_freq_factors(path: str | Path, reader: GGUFReader | None = None) -> torch.Tensor | None:
    """Llama-3 style `rope_freqs.weight` [head_dim/2] (divides each RoPE frequency), or None."""
    reader = reader or GGUFReader(str(path))
    # the engine (as llama.cpp) applies them to llama models only
    if _tensor(reader, "rope_freqs.weight") is None or read_base_model_info(path, reader).arch != "llama":
        return None
    return torch.from_numpy(_dequantize(reader, "rope_freqs.weight", path))


def load_layer_attention(path: str | Path, layer: int, reader: GGUFReader | None = None) -> dict[str, torch.Tensor]:
    """Layer `layer`'s attention block and the model's output norm as float32 tensors, keyed by the
    adapter's parameter names (`attn_q.weight`, ...), to initialise a KangarooAdapter.

    GGUF q/k weights are already in ggml's RoPE layout, consistent with the rope type above."""
    reader = reader or GGUFReader(str(path))
    info = read_base_model_info(path, reader)
    if not 0 <= layer < info.n_layer:
        raise ValueError(f"{path}: layer {layer} out of range [0, {info.n_layer})")
    names = {f"{n}.weight": f"blk.{layer}.{n}.weight" for n in ATTN_TENSORS}
    if info.has_bias:
        names.update({f"{n}.bias": f"blk.{layer}.{n}.bias" for n in ("attn_q", "attn_k", "attn_v")})
    if info.has_qk_norm:
        names.update({f"{n}.weight": f"blk.{layer}.{n}.weight" for n in ("attn_q_norm", "attn_k_norm")})
    names["output_norm.weight"] = "output_norm.weight"
    return {ours: torch.from_numpy(_dequantize(reader, theirs, path)) for ours, theirs in names.items()}


def load_layer_ffn(path: str | Path, layer: int, reader: GGUFReader | None = None) -> dict[str, torch.Tensor]:
    """Layer `layer`'s SwiGLU feed-forward block (`ffn_norm`, `ffn_gate`, `ffn_up`, `ffn_down`) as
    float32 tensors keyed `<name>.weight`, [out, in] as torch's Linear holds them."""
    reader = reader or GGUFReader(str(path))
    info = read_base_model_info(path, reader)
    if not 0 <= layer < info.n_layer:
        raise ValueError(f"{path}: layer {layer} out of range [0, {info.n_layer})")
    return {f"{n}.weight": torch.from_numpy(_dequantize(reader, f"blk.{layer}.{n}.weight", path))
            for n in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}


def model_fingerprint(path: str | Path) -> str:
    """The fingerprint adapters are tied to (docs/formats.md), 16 lower-case hex digits: the
    engine's, read from the file's metadata without loading the model."""
    return _native.model_fingerprint(str(path))

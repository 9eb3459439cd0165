"""The features stage's second backend: the base model's forward pass in torch, its weights
dequantized from the GGUF and its matrix products in bfloat16 where the device has it natively
(precision.default_precision), else float32.

The engine (features.extract) computes exactly what decoding computes, one integer dot product
per weight block and row; torch multiplies whole matrices on the CPU's matrix units where it has
them (AMX, AVX-512 BF16), or on a GPU. The states differ from the engine's by rounding (what the
adapter learns from is the same: tests/test_torch_teacher.py measures how close), and torch is
several times faster on such CPUs: docs/training.md, "The features stage in torch".

Architectures: the llama family the adapter's attention block describes (llama, qwen2, qwen3:
pre-norm layers, SwiGLU FFN) and Gemma 3, whose layers add what the engine's graph_gemma3.cpp
does (the BaseModelInfo fields after attn_scale): embeddings scaled, RMSNorm of the attention and
FFN outputs before each residual add, GeGLU, and local layers that see the last n_swa positions
with their own RoPE base.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGUFReader
from gguf.quants import dequantize
from torch import nn

from .adapter_model import AdapterConfig, RMSNorm, attention, rope_cos_sin
from .base_model import BaseModelInfo, load_rope_freq_factors, read_base_model_info
from .precision import default_precision, torch_dtype

TORCH_TEACHER_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")


class _Linear(nn.Module):
    """y = x W^T (+ b): W held in the compute dtype, x cast to it, y in float32 (the residual
    stream, norms and RoPE stay float32) or, with keep_dtype, in the compute dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, keep_dtype: bool = False):
        super().__init__()
        self.weight, self.bias, self.keep_dtype = weight.to(dtype), bias, keep_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(self.weight.dtype), self.weight)
        y = y if self.keep_dtype else y.float()
        return y if self.bias is None else y + self.bias


def _norm(weight: torch.Tensor, eps: float) -> RMSNorm:
    norm = RMSNorm(weight.shape[0], eps)
    norm.weight.data = weight
    return norm


class _Layer(nn.Module):
    """A decoder layer: x + attn_out(attn(norm(x))), then + ffn(.) (each output RMSNormed first
    where the model has post norms); the FFN is down(act(gate(norm(.))) * up(norm(.)))."""

    def __init__(self, info: BaseModelInfo, cfg: AdapterConfig, w: dict[str, torch.Tensor], dtype: torch.dtype,
                 local: bool):
        super().__init__()
        self.cfg, self.dtype, self.local = cfg, dtype, local   # local: a sliding-window layer
        self.attn_norm, self.ffn_norm = _norm(w["attn_norm.weight"], cfg.rms_eps), _norm(w["ffn_norm.weight"], cfg.rms_eps)
        self.attn_post_norm = self.ffn_post_norm = None
        if info.post_norms:
            self.attn_post_norm = _norm(w["post_attention_norm.weight"], cfg.rms_eps)
            self.ffn_post_norm = _norm(w["post_ffw_norm.weight"], cfg.rms_eps)
        self.act = F.silu if info.ffn_activation == "silu" else partial(F.gelu, approximate="tanh")
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"):
            setattr(self, name, _Linear(w[f"{name}.weight"], w.get(f"{name}.bias"), dtype))
        # gate and up in one product, their GLU in the compute dtype: half the time went to casts
        self.ffn_gate_up = _Linear(torch.cat([w["ffn_gate.weight"], w["ffn_up.weight"]]), None, dtype, keep_dtype=True)
        if cfg.qk_norm:
            self.attn_q_norm = _norm(w["attn_q_norm.weight"], cfg.rms_eps)
            self.attn_k_norm = _norm(w["attn_k_norm.weight"], cfg.rms_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.post_attn(attention(self, self.cfg, self.attn_norm(x), cos, sin, attn_mask, sdpa_dtype=self.dtype))
        return x + self.ffn(x)

    def post_attn(self, y: torch.Tensor) -> torch.Tensor:
        """The attention block's output projection y as the residual stream adds it."""
        return y if self.attn_post_norm is None else self.attn_post_norm(y)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block on the residual stream x, before its residual add."""
        gate, up = self.ffn_gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        y = self.ffn_down(self.act(gate) * up)
        return y if self.ffn_post_norm is None else self.ffn_post_norm(y)


class TorchTeacher(nn.Module):
    """The base model of a GGUF in torch, for teacher-forced features: `extract(ids, exit_layer)`."""

    def __init__(self, model_path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu"):
        super().__init__()
        if dtype is None:
            dtype = torch_dtype(default_precision(torch.device(device)))
        info = read_base_model_info(model_path)
        if info.arch not in TORCH_TEACHER_ARCHS:
            raise ValueError(f"the torch features backend runs {', '.join(TORCH_TEACHER_ARCHS)} models; "
                             f"{model_path} is {info.arch}: use the engine backend")
        if info.final_logit_softcap > 0:  # teacher.py's distribution is softmax(final @ head^T)
            raise ValueError(f"{model_path}: final logit soft-capping is not in the torch backend; use the engine backend")
        self.info, self.cfg, self.device = info, AdapterConfig.from_base(info), torch.device(device)
        reader = GGUFReader(str(model_path))
        tensors = {t.name: t for t in reader.tensors}

        def load(name: str) -> torch.Tensor:
            t = tensors[name]
            # numpy [ne1, ne0] = torch [out, in]; a copy, since the mmap is read-only
            return torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)).to(self.device)

        self.token_embd = load("token_embd.weight")
        layers = []
        for i in range(info.n_layer):
            prefix = f"blk.{i}."
            w = {n[len(prefix):]: load(n) for n in tensors if n.startswith(prefix)}
            layers.append(_Layer(info, self.cfg, w, dtype, local=info.n_swa > 0 and info.swa_layers[i]))
        self.layers = nn.ModuleList(layers)
        self.output_norm = _norm(load("output_norm.weight"), info.rms_eps)
        freq_factors = load_rope_freq_factors(model_path, reader)
        self.rope_freq_factors = None if freq_factors is None else freq_factors.to(self.device)
        self.requires_grad_(False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embd[ids]
        return x * self.info.embd_scale if self.info.embd_scale else x

    def rope(self, positions: torch.Tensor) -> dict[bool, tuple[torch.Tensor, torch.Tensor]]:
        """rope_cos_sin of the global (False) and local (True) layers at positions [B, T]."""
        info = self.info
        ropes = {False: rope_cos_sin(positions * info.rope_freq_scale, self.cfg.head_dim, info.rope_freq_base,
                                     self.rope_freq_factors)}
        if info.n_swa:
            ropes[True] = rope_cos_sin(positions, self.cfg.head_dim, info.rope_freq_base_swa, self.rope_freq_factors)
        return ropes

    def window_mask(self, n: int) -> torch.Tensor | None:
        """[1, 1, n, n] bool: what a local layer's position i sees (i - n_swa < j <= i, as the
        engine's kq_mask_swa); None where no position reaches past the window (causal is enough)."""
        if not self.info.n_swa or n <= self.info.n_swa:
            return None
        i = torch.arange(n, device=self.device)
        d = i[:, None] - i[None]
        return ((d >= 0) & (d < self.info.n_swa))[None, None]

    @torch.inference_mode()
    def extract(self, ids: list[int], exit_layer: int) -> tuple[np.ndarray, np.ndarray]:
        """As features.extract: hidden [n, n_embd] after layers [0, exit_layer), normed [n, n_embd]
        the final normed state, float32 numpy."""
        x = self.embed(torch.tensor(ids, device=self.device))[None]            # [1, T, n_embd]
        ropes = self.rope(torch.arange(len(ids), device=self.device)[None])
        window = self.window_mask(len(ids))
        hidden = None
        for i, layer in enumerate(self.layers):
            if i == exit_layer:
                hidden = x
            x = layer(x, *ropes[layer.local], window if layer.local else None)
        normed = self.output_norm(x)
        return hidden[0].cpu().numpy(), normed[0].cpu().numpy()

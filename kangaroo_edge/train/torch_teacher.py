"""The features stage's second backend: the base model's forward pass in torch, its weights
dequantized from the GGUF and its matrix products in bfloat16 where the device has it natively
(precision.default_precision), else float32.

The engine (features.extract) computes exactly what decoding computes, one integer dot product
per weight block and row; torch multiplies whole matrices on the CPU's matrix units where it has
them (AMX, AVX-512 BF16), or on a GPU. The states differ from the engine's by rounding (what the
adapter learns from is the same: tests/test_torch_teacher.py measures how close), and torch is
several times faster on such CPUs: docs/training.md, "The features stage in torch".

Architectures: the llama family the adapter's attention block describes (llama, qwen2, qwen3):
pre-norm layers, SwiGLU FFN. Gemma 3 (sandwich norms, GELU, sliding windows) takes the engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGUFReader
from gguf.quants import dequantize
from torch import nn

from .adapter_model import AdapterConfig, RMSNorm, attention, rope_cos_sin
from .base_model import load_rope_freq_factors, read_base_model_info
from .precision import default_precision, torch_dtype

TORCH_TEACHER_ARCHS = ("llama", "qwen2", "qwen3")


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


class _Layer(nn.Module):
    """A pre-norm decoder layer: x + attn(norm(x)), then + down(silu(gate(norm(.))) * up(norm(.)))."""

    def __init__(self, cfg: AdapterConfig, w: dict[str, torch.Tensor], dtype: torch.dtype):
        super().__init__()
        self.cfg, self.dtype = cfg, dtype
        self.attn_norm, self.ffn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps), RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.attn_norm.weight.data, self.ffn_norm.weight.data = w["attn_norm.weight"], w["ffn_norm.weight"]
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"):
            setattr(self, name, _Linear(w[f"{name}.weight"], w.get(f"{name}.bias"), dtype))
        # gate and up in one product, their SwiGLU in the compute dtype: half the time went to casts
        self.ffn_gate_up = _Linear(torch.cat([w["ffn_gate.weight"], w["ffn_up.weight"]]), None, dtype, keep_dtype=True)
        if cfg.qk_norm:
            self.attn_q_norm, self.attn_k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps), RMSNorm(cfg.head_dim, cfg.rms_eps)
            self.attn_q_norm.weight.data, self.attn_k_norm.weight.data = w["attn_q_norm.weight"], w["attn_k_norm.weight"]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + attention(self, self.cfg, self.attn_norm(x), cos, sin, sdpa_dtype=self.dtype)
        return x + self.ffn(x)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block on the residual stream x, before its residual add."""
        gate, up = self.ffn_gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return self.ffn_down(F.silu(gate) * up)


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
            layers.append(_Layer(self.cfg, {n[len(prefix):]: load(n) for n in tensors if n.startswith(prefix)}, dtype))
        self.layers = nn.ModuleList(layers)
        self.output_norm = RMSNorm(info.n_embd, info.rms_eps)
        self.output_norm.weight.data = load("output_norm.weight")
        freq_factors = load_rope_freq_factors(model_path, reader)
        self.rope_freq_factors = None if freq_factors is None else freq_factors.to(self.device)
        self.requires_grad_(False)

    @torch.inference_mode()
    def extract(self, ids: list[int], exit_layer: int) -> tuple[np.ndarray, np.ndarray]:
        """As features.extract: hidden [n, n_embd] after layers [0, exit_layer), normed [n, n_embd]
        the final normed state, float32 numpy."""
        x = self.token_embd[torch.tensor(ids, device=self.device)][None]       # [1, T, n_embd]
        positions = torch.arange(len(ids), device=self.device)[None]
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_freq_base, self.rope_freq_factors)
        hidden = None
        for i, layer in enumerate(self.layers):
            if i == exit_layer:
                hidden = x
            x = layer(x, cos, sin)
        normed = self.output_norm(x)
        return hidden[0].cpu().numpy(), normed[0].cpu().numpy()

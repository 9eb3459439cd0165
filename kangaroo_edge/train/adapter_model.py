"""The Kangaroo adapter in torch: exactly the forward pass of docs/formats.md.

    a = rms_norm(x) * attn_norm
    q, k, v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)     -> heads
    q, k = rms_norm(q) * q_norm, rms_norm(k) * k_norm       per head, when the base has q/k norms
    q, k = RoPE(q), RoPE(k)                                 the base's global RoPE
    o = causal_softmax(q k^T * attn_scale) v                (GQA: kv head = q head // group;
                                                             attn_scale 1/sqrt(head_dim) but Gemma's)
    y = x + o Wo^T
    out = rms_norm(y) * output_norm                         (logits = out @ lm_head^T, outside)

Parameter names match the adapter GGUF's tensor names without the `adapter.` prefix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02  # random init of the projections, as for transformer layers


@dataclass(frozen=True)
class AdapterConfig:
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_freq_base: float
    rope_type: str          # "normal" (llama: adjacent pairs) | "neox" (qwen2, qwen3, gemma3: split halves)
    bias: bool = False      # q/k/v biases (qwen2)
    qk_norm: bool = False   # per-head q/k RMSNorm before RoPE (qwen3, gemma3)
    attn_scale: float | None = None  # scale of q.k; None: 1/sqrt(head_dim)

    def __post_init__(self):
        if self.rope_type not in ("normal", "neox"):
            raise ValueError(f"rope_type must be 'normal' or 'neox', got {self.rope_type!r}")
        if self.n_head % self.n_head_kv or self.head_dim % 2:
            raise ValueError(f"bad head layout: {self.n_head} heads, {self.n_head_kv} kv heads, dim {self.head_dim}")

    @classmethod
    def from_base(cls, info) -> AdapterConfig:
        """From a base_model.BaseModelInfo: the adapter copies the base model's attention shape."""
        return cls(info.n_embd, info.n_head, info.n_head_kv, info.head_dim, info.rms_eps,
                   info.rope_freq_base, info.rope_type, info.has_bias, info.has_qk_norm, info.attn_scale)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """ggml's rms_norm followed by the weight: x / sqrt(mean(x^2) + eps) * w."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float,
                 freq_factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [B, T] -> cos, sin: [B, 1, T, head_dim/2]; theta_i = pos * base^(-2i/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    if freq_factors is not None:  # Llama-3 rope_freqs.weight divides the frequencies, as in ggml
        inv_freq = inv_freq / freq_factors.to(inv_freq)
    theta = positions[:, None, :, None].to(torch.float64) * inv_freq  # [B, 1, T, head_dim/2]
    return theta.cos().float(), theta.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_type: str) -> torch.Tensor:
    """x: [B, H, T, D]. Rotates pairs (x0, x1) by theta: (x0 cos - x1 sin, x0 sin + x1 cos).
    normal (ggml mode 0): pairs (x[2i], x[2i+1]); neox (mode 2): pairs (x[i], x[i + D/2])."""
    if rope_type == "normal":
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)


def add_attention_projections(m: nn.Module, cfg: AdapterConfig) -> None:
    """The base model's attention shape as m.attn_q, attn_k, attn_v, attn_output (+ per-head
    attn_q_norm, attn_k_norm where the base has them): the adapter GGUF's tensor names."""
    q_dim, kv_dim = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
    m.attn_q = nn.Linear(cfg.n_embd, q_dim, bias=cfg.bias)
    m.attn_k = nn.Linear(cfg.n_embd, kv_dim, bias=cfg.bias)
    m.attn_v = nn.Linear(cfg.n_embd, kv_dim, bias=cfg.bias)
    m.attn_output = nn.Linear(q_dim, cfg.n_embd, bias=False)
    if cfg.qk_norm:
        m.attn_q_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)
        m.attn_k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)


def project_qkv(m: nn.Module, cfg: AdapterConfig, a: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The heads of `add_attention_projections`' module m on normed input a: [B, T, n_embd] ->
    q [B, H, T, D], k and v [B, Hkv, T, D], q and k normed (where the base norms them) and rotated."""
    B, T, _ = a.shape
    q = m.attn_q(a).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
    k = m.attn_k(a).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
    v = m.attn_v(a).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
    if cfg.qk_norm:  # over each head's D values
        q, k = m.attn_q_norm(q), m.attn_k_norm(k)
    return apply_rope(q, cos, sin, cfg.rope_type), apply_rope(k, cos, sin, cfg.rope_type), v


def attention(m: nn.Module, cfg: AdapterConfig, a: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              attn_mask: torch.Tensor | None = None, sdpa_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The attention block of `add_attention_projections`' module m on normed input a: [B, T, n_embd]
    -> its output projection [B, T, n_embd] (before the residual add). cos, sin: rope_cos_sin's;
    attn_mask: [B, 1, T, T] bool (True = visible), None = causal; sdpa_dtype: q, k, v cast to it
    for the softmax(q k^T) v products (bf16 in the torch teacher)."""
    B, T, _ = a.shape
    q, k, v = project_qkv(m, cfg, a, cos, sin)
    # GQA: q head h reads kv head h // group (repeat_interleave puts copies side by side)
    group = cfg.n_head // cfg.n_head_kv
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)    # [B, H, T, D]
    if sdpa_dtype is not None:
        q, k, v = q.to(sdpa_dtype), k.to(sdpa_dtype), v.to(sdpa_dtype)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                       is_causal=attn_mask is None, scale=attention_scale(cfg))
    return m.attn_output(o.transpose(1, 2).reshape(B, T, -1))


def attention_scale(cfg: AdapterConfig) -> float:
    return cfg.attn_scale or cfg.head_dim ** -0.5


def init_projections(*linears: nn.Linear) -> None:
    """Random init, as for transformer layers; biases zero."""
    for lin in linears:
        nn.init.normal_(lin.weight, std=INIT_STD)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


class KangarooAdapter(nn.Module):
    def __init__(self, cfg: AdapterConfig, rope_freq_factors: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        add_attention_projections(self, cfg)
        self.output_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        # the base model's, not trained and not saved: the engine takes it from the base GGUF
        self.register_buffer("rope_freq_factors", rope_freq_factors, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_projections(self.attn_q, self.attn_k, self.attn_v, self.attn_output)
        for norm in (self.attn_norm, self.output_norm, getattr(self, "attn_q_norm", None),
                     getattr(self, "attn_k_norm", None)):
            if norm is not None:
                nn.init.ones_(norm.weight)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, n_embd] exit-layer hidden states; positions: [B, T] absolute positions;
        key_padding_mask: [B, T] bool, True = real token (only needed for left padding: with right
        padding, causality already hides the pads from real tokens). Returns normed [B, T, n_embd]."""
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_freq_base, self.rope_freq_factors)
        y = x + attention(self, self.cfg, self.attn_norm(x), cos, sin, self._mask(key_padding_mask, x.shape[1], x.device))
        return self.output_norm(y)

    @staticmethod
    def _mask(key_padding_mask: torch.Tensor | None, T: int, device) -> torch.Tensor | None:
        if key_padding_mask is None:
            return None
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        mask = causal & key_padding_mask[:, None, None, :]                   # [B, 1, T, T]
        # a pad query with no visible key would give NaN: let every query see itself
        return mask | torch.eye(T, dtype=torch.bool, device=device)


def adapter_logits(normed: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    """normed: [..., n_embd], lm_head: [n_vocab, n_embd] (frozen) -> logits [..., n_vocab]."""
    return normed @ lm_head.T

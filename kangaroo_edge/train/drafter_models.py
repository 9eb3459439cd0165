"""The drafter kinds of issue 24 in torch, beside the paper's adapter (adapter_model.py):

    adapter   (a) exit-layer state h_t -> one attention layer over h_{<=t} -> head       (the paper)
    adapter-ffn   (a) with a SwiGLU feed-forward block after the attention: a whole decoder
                  layer, initialised from the layer after the exit (more capacity, same inputs)
    deep      (b) the same query from h_t, but keys and values of verified positions come from
                  their final normed states f_j (the verification pass computed them); drafted
                  positions keep their exit-layer states
    eagle     (c) u_t = fc[f_{t-1}; e(x_t)] -> one decoder layer over u_{<=t} -> head: drafts
                  from the previous position's final state and the token's embedding, without
                  the shallow layers; its own output stands in for f when it drafts further

Every kind predicts token t+1 at position t, scored against the full model's softmax(head f_t).

Draft depth k (the k-th draft of a cycle, the k-1 before it accepted) changes what some keys are
made of: for (b) the k newest positions are drafted ones (exit-layer states), for (c) the k-1
newest inputs carry the head's own predicted states instead of the model's. Training and
evaluation reproduce that exactly, position by position, with `mixed_attention`: the keys at
distance d < k from each query come from per-distance sources, the older ones from the base source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .adapter_model import (AdapterConfig, KangarooAdapter, RMSNorm, add_attention_projections, apply_rope,
                            attention, attention_scale, init_projections, rope_cos_sin)


def mixed_attention(q: torch.Tensor, base: tuple[torch.Tensor, torch.Tensor],
                    recent: list[tuple[torch.Tensor, torch.Tensor]], scale: float) -> torch.Tensor:
    """Causal attention whose key/value at distance d = t - j from query t comes from recent[d]
    for d < len(recent), and from `base` for older keys. All [B, H, T, D] (key j of a source is
    that source's row j). Returns [B, H, T, D]."""
    T = q.shape[-2]
    k0, v0 = base
    s = len(recent)
    t = torch.arange(T, device=q.device)
    dist = t[:, None] - t[None, :]                                    # [T, T]
    scores = (q @ k0.transpose(-1, -2)) * scale
    scores = scores.masked_fill(dist < s, float("-inf"))              # base: keys at distance >= s
    diag_scores = []
    for d, (kd, _) in enumerate(recent):                              # query t, key t - d of source d
        sd = (q[..., d:, :] * kd[..., :T - d, :]).sum(-1) * scale     # [B, H, T - d]
        diag_scores.append(sd)
    if diag_scores:
        scores = scores.clone()
        for d, sd in enumerate(diag_scores):
            torch.diagonal(scores, offset=-d, dim1=-2, dim2=-1)[..., :] = sd
    # queries t < d have no key at distance d: those diagonal cells do not exist, nothing to mask
    p = torch.softmax(scores, dim=-1)
    out = p.masked_fill(dist < s, 0.0) @ v0
    for d, (_, vd) in enumerate(recent):
        pd = torch.diagonal(p, offset=-d, dim1=-2, dim2=-1)          # [B, H, T - d]
        out = out + F.pad(pd[..., None] * vd[..., :T - d, :], (0, 0, d, 0))
    return out


class Attention(nn.Module):
    """The base model's attention shape (GQA, RoPE, optional q/k norms) as projections; callers
    choose which inputs make queries and which make keys and values."""

    def __init__(self, cfg: AdapterConfig, rope_freq_factors: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        add_attention_projections(self, cfg)
        init_projections(self.attn_q, self.attn_k, self.attn_v, self.attn_output)
        self.register_buffer("rope_freq_factors", rope_freq_factors, persistent=False)

    def _rope(self, positions):
        return rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_freq_base, self.rope_freq_factors)

    def query(self, a: torch.Tensor, rope) -> torch.Tensor:
        cfg = self.cfg
        B, T, _ = a.shape
        q = self.attn_q(a).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        if cfg.qk_norm:
            q = self.attn_q_norm(q)
        return apply_rope(q, *rope, cfg.rope_type)

    def key_value(self, a: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        B, T, _ = a.shape
        k = self.attn_k(a).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        v = self.attn_v(a).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        if cfg.qk_norm:
            k = self.attn_k_norm(k)
        group = cfg.n_head // cfg.n_head_kv
        k = apply_rope(k, *rope, cfg.rope_type)
        return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

    def output(self, o: torch.Tensor) -> torch.Tensor:
        B, H, T, D = o.shape
        return self.attn_output(o.transpose(1, 2).reshape(B, T, H * D))

    @property
    def scale(self) -> float:
        return attention_scale(self.cfg)


class FFNAdapter(nn.Module):
    """(a) plus a feed-forward block: x + attn(norm(x)), then + ffn(norm(.)), then the output norm.
    `adapter` is a KangarooAdapter (its attention, norms and RoPE); `ffn` load_layer_ffn's tensors."""

    def __init__(self, adapter: KangarooAdapter, ffn: dict[str, torch.Tensor]):
        super().__init__()
        self.adapter = adapter
        d, n_ff = adapter.cfg.n_embd, ffn["ffn_gate.weight"].shape[0]
        self.ffn_norm = RMSNorm(d, adapter.cfg.rms_eps)
        self.ffn_gate = nn.Linear(d, n_ff, bias=False)
        self.ffn_up = nn.Linear(d, n_ff, bias=False)
        self.ffn_down = nn.Linear(n_ff, d, bias=False)
        self.load_state_dict({**{f"adapter.{k}": v for k, v in adapter.state_dict().items()}, **ffn})

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        a = self.adapter
        cos, sin = rope_cos_sin(positions, a.cfg.head_dim, a.cfg.rope_freq_base, a.rope_freq_factors)
        y = x + attention(a, a.cfg, a.attn_norm(x), cos, sin)
        h = self.ffn_norm(y)
        return a.output_norm(y + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h)))


class DeepContextAdapter(nn.Module):
    """(b): the paper's adapter whose keys and values for verified positions come from the final
    normed states (through a norm of their own), the query and drafted positions' keys from the
    exit layer."""

    def __init__(self, cfg: AdapterConfig, rope_freq_factors: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.deep_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.attn = Attention(cfg, rope_freq_factors)
        self.output_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)

    def forward(self, exit_h: torch.Tensor, final: torch.Tensor, positions: torch.Tensor, depth: int = 1) -> torch.Tensor:
        """exit_h, final: [B, T, n_embd]; the `depth` newest keys of each query are drafted
        positions (exit-layer states). Returns the normed output [B, T, n_embd]."""
        rope = self.attn._rope(positions)
        a = self.attn_norm(exit_h)
        shallow = self.attn.key_value(a, rope)
        deep = self.attn.key_value(self.deep_norm(final), rope)
        o = mixed_attention(self.attn.query(a, rope), deep, [shallow] * depth, self.attn.scale)
        return self.output_norm(exit_h + self.attn.output(o))


@dataclass(frozen=True)
class EagleConfig:
    n_ff: int = 0  # SwiGLU width of the decoder layer's MLP (0: attention only)


class EagleHead(nn.Module):
    """(c): fc[norm(f_{t-1}); norm(e(x_t))] -> attention (+ SwiGLU MLP) -> output norm."""

    def __init__(self, cfg: AdapterConfig, ecfg: EagleConfig, rope_freq_factors: torch.Tensor | None = None):
        super().__init__()
        self.cfg, self.ecfg = cfg, ecfg
        d = cfg.n_embd
        self.feature_norm = RMSNorm(d, cfg.rms_eps)
        self.embed_norm = RMSNorm(d, cfg.rms_eps)
        self.fc = nn.Linear(2 * d, d, bias=False)
        init_projections(self.fc)
        self.attn_norm = RMSNorm(d, cfg.rms_eps)
        self.attn = Attention(cfg, rope_freq_factors)
        if ecfg.n_ff:
            self.ffn_norm = RMSNorm(d, cfg.rms_eps)
            self.ffn_gate = nn.Linear(d, ecfg.n_ff, bias=False)
            self.ffn_up = nn.Linear(d, ecfg.n_ff, bias=False)
            self.ffn_down = nn.Linear(ecfg.n_ff, d, bias=False)
            init_projections(self.ffn_gate, self.ffn_up, self.ffn_down)
        self.output_norm = RMSNorm(d, cfg.rms_eps)

    def inputs(self, prev_final: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.feature_norm(prev_final), self.embed_norm(emb)], dim=-1))

    def block(self, u: torch.Tensor, kv_sources: list[tuple[torch.Tensor, torch.Tensor]],
              base: tuple[torch.Tensor, torch.Tensor] | None, rope) -> torch.Tensor:
        q = self.attn.query(self.attn_norm(u), rope)
        if base is None:  # depth 1: plain causal attention over these inputs
            k, v = kv_sources[0]
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn.scale)
        else:
            o = mixed_attention(q, base, kv_sources, self.attn.scale)
        y = u + self.attn.output(o)
        if self.ecfg.n_ff:
            a = self.ffn_norm(y)
            y = y + self.ffn_down(F.silu(self.ffn_gate(a)) * self.ffn_up(a))
        return self.output_norm(y)

    def forward(self, final: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor, depth: int = 1) -> list[torch.Tensor]:
        """final: [B, T, n_embd] the model's final normed states; emb: [B, T, n_embd] the tokens'
        embeddings. Returns the outputs of draft depths 1..depth, each [B, T, n_embd]: depth k at
        position t is the k-th draft of a cycle whose pending token is x_{t-k+1}, the k-1 drafts
        before it right (so x_{t-k+2}..x_t are the true tokens), their states the head's own."""
        rope = self.attn._rope(positions)
        prev = F.pad(final, (0, 0, 1, 0))[:, :-1]               # f_{t-1}; zeros before the window
        u = [self.inputs(prev, emb)]                              # u[0]: inputs from the model's states
        kv = [self.attn.key_value(self.attn_norm(u[0]), rope)]
        outs = [self.block(u[0], kv, None, rope)]
        for k in range(1, depth):
            prev = F.pad(outs[-1], (0, 0, 1, 0))[:, :-1]          # the head's own f-hat_{t-1}
            u.append(self.inputs(prev, emb))
            kv.append(self.attn.key_value(self.attn_norm(u[-1]), rope))
            # query at t (depth k + 1): key t - d made at depth k + 1 - d for d <= k, older ones exact
            recent = [kv[k - d] for d in range(k)]
            outs.append(self.block(u[-1], recent, kv[0], rope))
        return outs

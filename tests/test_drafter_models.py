"""The drafter kinds' torch models (kangaroo_edge/train/drafter_models.py): what they compute for
all positions at once must be what drafting computes one step at a time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kangaroo_edge.train.adapter_model import AdapterConfig, KangarooAdapter, attention, rope_cos_sin
from kangaroo_edge.train.drafter_models import (DeepContextAdapter, EagleConfig, EagleHead, FFNAdapter,
                                                mixed_attention)

pytestmark = pytest.mark.fast

CFG = AdapterConfig(n_embd=32, n_head=4, n_head_kv=2, head_dim=8, rms_eps=1e-6, rope_freq_base=10000.0,
                    rope_type="neox")


def _loop_attention(q, sources_for_distance, scale):
    """Each query alone: key j of query t from sources_for_distance(t - j)."""
    B, H, T, D = q.shape
    out = torch.zeros_like(q)
    for t in range(T):
        ks = torch.stack([sources_for_distance(t - j)[0][:, :, j] for j in range(t + 1)], 2)
        vs = torch.stack([sources_for_distance(t - j)[1][:, :, j] for j in range(t + 1)], 2)
        out[:, :, t] = (torch.softmax((q[:, :, t:t + 1] @ ks.transpose(-1, -2)) * scale, -1) @ vs)[:, :, 0]
    return out


@pytest.mark.parametrize("n_recent", [0, 1, 3])
def test_mixed_attention_reads_each_distance_from_its_source(n_recent):
    g = torch.Generator().manual_seed(n_recent)
    q = torch.randn(2, 3, 9, 4, generator=g)
    base = (torch.randn(2, 3, 9, 4, generator=g), torch.randn(2, 3, 9, 4, generator=g))
    recent = [(torch.randn(2, 3, 9, 4, generator=g), torch.randn(2, 3, 9, 4, generator=g)) for _ in range(n_recent)]
    got = mixed_attention(q, base, recent, 0.5)
    want = _loop_attention(q, lambda d: recent[d] if d < n_recent else base, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if n_recent == 0:  # plain causal attention
        torch.testing.assert_close(got, F.scaled_dot_product_attention(q, *base, is_causal=True, scale=0.5),
                                   rtol=1e-5, atol=1e-6)


def test_deep_context_with_final_states_equal_to_exit_states_is_the_paper_adapter():
    torch.manual_seed(0)
    adapter = KangarooAdapter(CFG)
    deep = DeepContextAdapter(CFG)
    deep.attn.load_state_dict({k: v for k, v in adapter.state_dict().items()
                               if k.startswith("attn_") and k != "attn_norm.weight"})
    x, pos = torch.randn(2, 7, 32), torch.arange(7).repeat(2, 1)
    for depth in (1, 3):
        torch.testing.assert_close(deep(x, x, pos, depth), adapter(x, pos), rtol=1e-5, atol=1e-5)


def test_ffn_adapter_is_the_adapter_plus_a_swiglu_block():
    torch.manual_seed(0)
    adapter = KangarooAdapter(CFG)
    ffn = {"ffn_norm.weight": torch.rand(32) + 0.5, "ffn_gate.weight": torch.randn(48, 32) * 0.2,
           "ffn_up.weight": torch.randn(48, 32) * 0.2, "ffn_down.weight": torch.randn(32, 48) * 0.2}
    x, pos = torch.randn(2, 7, 32), torch.arange(7).repeat(2, 1)
    cos, sin = rope_cos_sin(pos, CFG.head_dim, CFG.rope_freq_base)
    y = x + attention(adapter, CFG, adapter.attn_norm(x), cos, sin)      # the adapter before its output norm
    h = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + CFG.rms_eps) * ffn["ffn_norm.weight"]
    ffn_out = (F.silu(h @ ffn["ffn_gate.weight"].T) * (h @ ffn["ffn_up.weight"].T)) @ ffn["ffn_down.weight"].T
    torch.testing.assert_close(FFNAdapter(adapter, ffn)(x, pos), adapter.output_norm(y + ffn_out), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapter.output_norm(y), adapter(x, pos))  # and without the block, the adapter


def test_eagle_depths_are_what_drafting_step_by_step_computes():
    """Depth k at position t: the k-th draft after the pending token x_{t-k+1}, its inputs the
    head's own states for the drafted positions, the model's before them."""
    torch.manual_seed(0)
    head = EagleHead(CFG, EagleConfig(n_ff=48))
    T = 8
    final, emb, pos = torch.randn(1, T, 32), torch.randn(1, T, 32), torch.arange(T)[None]
    outs = head(final, emb, pos, depth=3)
    for t in range(2, T):
        for k in (1, 2, 3):
            start = t - k + 1                        # the pending token's position
            states = list(final[0, :start].unbind(0))  # f_0 .. f_{start-1}: the model's own
            for p in range(start, t + 1):            # one draft step per position
                # position p's input state is states[p - 1]; states[p] is not read at p
                s = torch.stack(states + [torch.zeros(32)])[None]
                out = head(s, emb[:, :p + 1], pos[:, :p + 1], 1)[0][0, p]
                states.append(out)                   # the head's own state stands in for f_p
            torch.testing.assert_close(outs[k - 1][0, t], out, rtol=1e-4, atol=1e-5)

"""The fit's cheaper loss (fit.restricted_soft_cross_entropy): the LM-head soft cross-entropy over
a draft vocabulary plus one pooled "other" bucket."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kangaroo_edge.train.fit import (FitConfig, RestrictedHead, agreement_stats, fit, restricted_soft_cross_entropy,
                                    soft_cross_entropy)

from test_train_fit import EXIT, tiny  # noqa: F401  (the synthetic base model and its features)

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

V, E, P = 97, 16, 11


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.randn(V, E, generator=g)
    return head, torch.randn(P, E, generator=g, requires_grad=True), torch.randn(P, E, generator=g)


def test_equals_the_full_loss_when_the_restriction_is_the_whole_vocabulary():
    head, h, target = _tensors()
    full = soft_cross_entropy(h, target, head)
    (g_full,) = torch.autograd.grad(full.sum(), h)
    rh = RestrictedHead.build(head, torch.randperm(V).tolist())  # every token, in any order
    assert rh.other_row is None
    restricted = restricted_soft_cross_entropy(h, target, head, rh)
    (g_restricted,) = torch.autograd.grad(restricted.sum(), h)
    torch.testing.assert_close(restricted, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_restricted, g_full, rtol=1e-5, atol=1e-6)
    # and so do the held-out metrics
    torch.testing.assert_close(agreement_stats(h, target, head, rh), agreement_stats(h, target, head),
                               rtol=1e-4, atol=1e-4)


def test_agreement_within_a_draft_vocabulary_is_a_draft_heads():
    """Under a restricted loss the other tokens' logits are never trained, so held-out agreement
    is measured as a draft head of the restricted tokens drafts: its softmax over them against
    the full model's distribution."""
    head, h, target = _tensors(2)
    h = h.detach()
    vocab = list(range(0, V, 2))
    got = agreement_stats(h, target, head, RestrictedHead.build(head, vocab))
    p = F.softmax(target @ head.T, -1)
    q = F.softmax(h @ head[vocab].T, -1)
    assert got[2] == (torch.tensor(vocab)[q.argmax(-1)] == p.argmax(-1)).sum()
    torch.testing.assert_close(got[3], torch.minimum(p[:, vocab], q).sum())
    torch.testing.assert_close(got[0], restricted_soft_cross_entropy(h, target, head, RestrictedHead.build(head, vocab)).sum())


def test_fit_with_a_restricted_vocabulary_learns(tiny, tmp_path):  # noqa: F811
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out=str(tmp_path / "r.pt"),
                    exit_layer=EXIT, lr=3e-2, epochs=4, batch_size=8, max_len=64, heldout_frac=0.2, chunk=50,
                    init="random", warmup_ratio=0.1, restricted_vocab=32, progress=False)
    history = fit(cfg)
    assert history[-1]["heldout_loss"] < 0.7 * history[0]["heldout_loss"]  # the restricted loss, held out
    assert history[-1]["top1_agreement"] > history[0]["top1_agreement"] + 0.1
    with pytest.raises(ValueError, match="size must be >= 1"):
        fit(FitConfig(**{**cfg.__dict__, "restricted_vocab": -1, "out": str(tmp_path / "x.pt")}))

"""The fit's cheaper loss (fit.restricted_soft_cross_entropy): the LM-head soft cross-entropy over
a draft vocabulary plus one pooled "other" bucket."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kangaroo_edge.train.fit import FitConfig, RestrictedHead, fit, restricted_soft_cross_entropy, soft_cross_entropy

from test_train_fit import EXIT, tiny  # noqa: F401  (the synthetic base model and its features)

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


def test_pools_the_rest_into_one_bucket():
    head, h, target = _tensors(1)
    vocab = list(range(0, V, 3))
    rh = RestrictedHead.build(head, vocab)
    rest = [t for t in range(V) if t not in set(vocab)]
    p = F.softmax(target @ head.T, -1)
    want_p = torch.cat([p[:, vocab], p[:, rest].sum(-1, keepdim=True)], -1)
    other = h @ head[rest].mean(0) + math.log(len(rest))
    want_log_q = F.log_softmax(torch.cat([h @ head[vocab].T, other[:, None]], -1), -1)
    got = restricted_soft_cross_entropy(h, target, head, rh)
    torch.testing.assert_close(got, -(want_p * want_log_q).sum(-1), rtol=1e-5, atol=1e-5)
    # the bucket's logit is Jensen's lower bound of the adapter's log-sum-exp over the others
    assert torch.all(other <= torch.logsumexp(h @ head[rest].T, -1) + 1e-5)


def test_fit_with_a_restricted_vocabulary_learns(tiny, tmp_path):  # noqa: F811
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out=str(tmp_path / "r.pt"),
                    exit_layer=EXIT, lr=3e-2, epochs=4, batch_size=8, max_len=64, heldout_frac=0.2, chunk=50,
                    init="random", warmup_ratio=0.1, restricted_vocab=32, progress=False)
    history = fit(cfg)
    assert history[-1]["heldout_loss"] < 0.7 * history[0]["heldout_loss"]  # held-out metrics: full vocabulary
    assert history[-1]["top1_agreement"] > history[0]["top1_agreement"] + 0.1
    with pytest.raises(ValueError, match="size must be >= 1"):
        fit(FitConfig(**{**cfg.__dict__, "restricted_vocab": -1, "out": str(tmp_path / "x.pt")}))

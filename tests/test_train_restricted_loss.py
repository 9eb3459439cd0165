"""The fit's cheaper loss (fit.restricted_soft_cross_entropy): the LM-head soft cross-entropy over
a draft vocabulary plus one pooled "other" bucket, against the teacher's cached top-K
(teacher.TeacherTopK)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGUFReader

from kangaroo_edge.train.adapter_model import AdapterConfig
from kangaroo_edge.train.base_model import load_lm_head, read_base_model_info
from kangaroo_edge.train.feature_shards import FeatureShards, SequenceDataset
from kangaroo_edge.train.fit import (Dist, FitConfig, RestrictedHead, agreement_stats, build_adapter, fit,
                                    make_loaders, restricted_agreement_stats, restricted_soft_cross_entropy,
                                    soft_cross_entropy, train_step)
from kangaroo_edge.train.precision import PRECISIONS
from kangaroo_edge.train.teacher import TeacherTopK

from test_train_fit import EXIT, tiny  # noqa: F401  (the synthetic base model and its features)

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

V, E, P = 97, 16, 11


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.randn(V, E, generator=g)
    return head, torch.randn(P, E, generator=g, requires_grad=True), torch.randn(P, E, generator=g)


def _top_k(p: torch.Tensor, k: int):
    top = torch.topk(p, k, dim=-1)
    return top.indices, top.values


def test_equals_the_full_loss_when_the_restriction_is_the_whole_vocabulary():
    head, h, target = _tensors()
    full = soft_cross_entropy(h, target, head)
    (g_full,) = torch.autograd.grad(full.sum(), h)
    rh = RestrictedHead.build(head, torch.randperm(V).tolist())  # every token, in any order
    assert rh.other_row is None
    p_full = F.softmax(target @ head.T, -1)
    # the teacher pooled from its full distribution, or from a top-K cache holding every token
    for p in (rh.pool(p_full), rh.pool_top_k(*_top_k(p_full, V))):
        restricted = restricted_soft_cross_entropy(h, p, rh)
        (g_restricted,) = torch.autograd.grad(restricted.sum(), h)
        torch.testing.assert_close(restricted, full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g_restricted, g_full, rtol=1e-5, atol=1e-6)
        # and so do the held-out metrics
        torch.testing.assert_close(restricted_agreement_stats(h, p, p_full.argmax(-1), rh),
                                   agreement_stats(h, target, head), rtol=1e-4, atol=1e-4)


def test_a_top_k_cache_pools_the_rest_into_other():
    head, h, target = _tensors(1)
    p_full = F.softmax(3 * target @ head.T, -1)
    vocab = list(range(0, V, 3))
    rh = RestrictedHead.build(head, vocab)
    exact, cached = rh.pool(p_full), rh.pool_top_k(*_top_k(p_full, 8))
    assert cached.shape == exact.shape == (P, len(vocab) + 1)
    torch.testing.assert_close(cached.sum(-1), torch.ones(P))
    # each cached token's mass is exact; what the cache lacks lands in "other", never elsewhere
    ids, _ = _top_k(p_full, 8)
    in_cache = torch.zeros(P, V, dtype=torch.bool).scatter_(1, ids, True)[:, vocab]
    torch.testing.assert_close(cached[:, :-1][in_cache], exact[:, :-1][in_cache])
    assert (cached[:, :-1][~in_cache] == 0).all() and (cached[:, -1] >= exact[:, -1] - 1e-6).all()


def test_agreement_within_a_draft_vocabulary_is_a_draft_heads():
    """Under a restricted loss the other tokens' logits are never trained, so held-out agreement
    is measured as a draft head of the restricted tokens drafts: its softmax over them against
    the full model's distribution."""
    head, h, target = _tensors(2)
    h = h.detach()
    vocab = list(range(0, V, 2))
    rh = RestrictedHead.build(head, vocab)
    p = F.softmax(target @ head.T, -1)
    got = restricted_agreement_stats(h, rh.pool(p), p.argmax(-1), rh)
    q = F.softmax(h @ head[vocab].T, -1)
    assert got[2] == (torch.tensor(vocab)[q.argmax(-1)] == p.argmax(-1)).sum()
    torch.testing.assert_close(got[3], torch.minimum(p[:, vocab], q).sum())
    torch.testing.assert_close(got[0], restricted_soft_cross_entropy(h, rh.pool(p), rh).sum())


def test_the_teacher_cache_is_the_full_models_top_k(tiny):  # noqa: F811
    shards = FeatureShards(tiny / "features")
    head = load_lm_head(str(tiny / "base.gguf"))
    teacher = TeacherTopK(shards, head, k=5)
    files = sorted(p.name for p in (tiny / "features").glob("*.teacher5.*"))
    assert len(files) == 2 * len(shards.shard_names)
    for i in (0, len(shards) - 1):
        seq = shards.sequence(i)
        p = F.softmax(torch.from_numpy(np.asarray(seq.final_normed, np.float32)) @ head.T, -1)
        ids, probs = teacher.window(i, 0, len(seq.tokens))
        want_ids, want_probs = _top_k(p, 5)
        assert np.array_equal(np.asarray(ids), want_ids.numpy())
        np.testing.assert_allclose(np.asarray(probs, np.float32), want_probs.numpy(), rtol=2e-3, atol=1e-4)
    # opened again, it reads the files instead of computing (a changed file is what it returns)
    mtimes = [p.stat().st_mtime_ns for p in sorted((tiny / "features").glob("*.teacher5.*"))]
    TeacherTopK(shards, head, k=5)
    assert mtimes == [p.stat().st_mtime_ns for p in sorted((tiny / "features").glob("*.teacher5.*"))]
    # the draft vocabulary's counts: the teacher's greedy token at each answer position, whether
    # or not the prompts' positions are trained
    n_answer = sum(length - resp for _, length, resp in map(shards.index_row, range(len(shards))))
    for prompts in (False, True):
        ds = SequenceDataset(shards, range(len(shards)), max_len=64, prompt_positions=prompts)
        assert sum(teacher.greedy_counts(ds).values()) == n_answer


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fit_with_a_restricted_vocabulary_learns(tiny, tmp_path, precision):  # noqa: F811
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out=str(tmp_path / "r.pt"),
                    exit_layer=EXIT, lr=3e-2, epochs=4, batch_size=8, max_len=64, heldout_frac=0.2, chunk=50,
                    init="random", warmup_ratio=0.1, draft_vocab=32, precision=precision, progress=False)
    history = fit(cfg)
    assert history[-1]["heldout_loss"] < 0.7 * history[0]["heldout_loss"]  # the restricted loss, held out
    assert history[-1]["top1_agreement"] > history[0]["top1_agreement"] + 0.1
    assert len(torch.load(cfg.out, weights_only=True)["draft_vocab"]) == 32  # the exported draft head
    with pytest.raises(ValueError, match="draft_vocab must be >= 0"):
        fit(FitConfig(**{**cfg.__dict__, "draft_vocab": -1, "out": str(tmp_path / "x.pt")}))


def test_a_fit_against_the_cached_teacher_leaves_the_final_states_on_disk(tiny):  # noqa: F811
    # they are half of what a window reads, and the cached top-K replaces them
    shards = FeatureShards(tiny / "features")
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out="unused.pt",
                    exit_layer=EXIT, batch_size=4, max_len=64, heldout_frac=0.2, draft_vocab=32)
    d = Dist(rank=0, world=1, device=torch.device("cpu"))
    teacher = TeacherTopK(shards, load_lm_head(str(tiny / "base.gguf")))
    for loader in make_loaders(shards, cfg, d, teacher)[:2]:
        batch = next(iter(loader))
        assert "final" not in batch and batch["exit"].shape[:2] == batch["t_ids"].shape[:2]
    assert "final" in next(iter(make_loaders(shards, cfg, d)[0]))  # the full loss needs them


@pytest.mark.parametrize("restricted", [False, True])
def test_a_bfloat16_step_follows_the_float32_one(tiny, restricted):  # noqa: F811
    """The fit's bf16 products (autocast) move the adapter as float32 does: one plain SGD step from
    the same weights on the same batch, the same loss to 1% and the same update direction."""
    base = str(tiny / "base.gguf")
    cfg = FitConfig(features=str(tiny / "features"), model=base, out="", batch_size=8, max_len=64,
                    heldout_frac=0.2, chunk=50, init="random", progress=False)
    shards, d = FeatureShards(cfg.features), Dist(0, 1, torch.device("cpu"))
    head = load_lm_head(base)
    teacher = TeacherTopK(shards, head, k=8) if restricted else None
    loader, _, _ = make_loaders(shards, cfg, d, teacher)
    rh = RestrictedHead.build(head, range(0, head.shape[0], 2)) if restricted else None
    reader = GGUFReader(base)
    torch.manual_seed(0)
    model = build_adapter(cfg, reader, AdapterConfig.from_base(read_base_model_info(base, reader)), EXIT)
    batch = next(iter(loader))
    losses, updates = {}, {}
    for precision in PRECISIONS:
        m = copy.deepcopy(model)
        before = torch.cat([p.detach().flatten() for p in m.parameters()])
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        losses[precision] = train_step(m, batch, head, opt, sched, cfg, d, rh, precision)
        updates[precision] = torch.cat([p.detach().flatten() for p in m.parameters()]) - before
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=1e-2)
    assert F.cosine_similarity(updates["bfloat16"], updates["float32"], dim=0) > 0.99

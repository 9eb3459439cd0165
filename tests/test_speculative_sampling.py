"""Speculative sampling keeps the model's exact distribution (tiny random-weight model).

We sample the first two generated tokens (t1 comes from the prompt's forward pass, t2 from the
first Kangaroo cycle: a draft sampled from the adapter's q, kept iff it is the model's own sample
at that position, native/sampling.h) and compare their empirical joint distribution with the
exact one computed from the model's logits. A random adapter makes q very different from p, so a
wrong acceptance rule shifts t2 towards q; the same statistic on draws from such a rule must fail
(negative control), which shows the test has the power to catch it. That the output is also
plain decoding's for each seed is tests/test_kangaroo.py's.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from scipy import stats as scipy_stats

from adapters import make_adapter
from kangaroo_edge import KangarooLM
from kangaroo_edge.decoding import DraftOptions, decode_steps
from kangaroo_edge.types import SamplingParams
from tiny_models import make_tiny_gguf

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

TOP_K = 4            # support of each step: 4 tokens, so 16 joint outcomes
TEMPERATURE = 8.0    # flattens the tiny random model's very peaked distributions
N_SAMPLES = 3000
ALPHA = 1e-3         # significance level of the chi-square goodness-of-fit test


def transform(logits: np.ndarray) -> dict[int, float]:
    """The engine's sampling transform for top-k + temperature: softmax over the top k logits."""
    top = np.argsort(-logits, kind="stable")[:TOP_K]
    z = np.exp((logits[top] - logits[top].max()) / TEMPERATURE)
    return {int(t): float(p) for t, p in zip(top, z / z.sum())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    lm = KangarooLM(make_tiny_gguf(d, "llama"), n_ctx=128, n_threads=1)
    lm.load_adapter(make_adapter(lm, d / "random-adapter.gguf", exit_layer=1, init="random", seed=4,
                                 random_std=0.15))
    return lm


def penalize(logits: np.ndarray, output: list[int], repeat_penalty: float = 1.0, presence_penalty: float = 0.0):
    """llama.cpp's penalties on the logits after `output` (the generation's tokens so far)."""
    out = logits.copy()
    for t in set(output):
        out[t] = out[t] * repeat_penalty if out[t] <= 0 else out[t] / repeat_penalty
        out[t] -= presence_penalty
    return out


def conditionals(lm: KangarooLM, prompt: list[int], **penalties: float) -> tuple[dict, dict, dict]:
    """p(t1), and for each t1: the model's p(t2 | t1) (with the penalties on t1) and the
    adapter's draft q(t2 | t1)."""
    e = lm.engine
    p1 = transform(e.forward(prompt, 0, e.n_layer, 0, "logits", True)[-1])
    p2, q2 = {}, {}
    for t1 in p1:
        p2[t1] = transform(penalize(e.forward(prompt + [t1], 0, e.n_layer, 0, "logits", True)[-1], [t1], **penalties))
        hidden = e.forward(prompt + [t1], 0, 1, 0, "hidden", True)
        q2[t1] = transform(e.adapter_logits(hidden, 0)[-1])
    return p1, p2, q2


def joint(p1: dict, second: dict) -> dict[tuple[int, int], float]:
    return {(t1, t2): a * b for t1, a in p1.items() for t2, b in second[t1].items()}


def wrong_rule_textbook_without_residual(p: dict, q: dict) -> dict:
    """A plausible bug: keep a draft x ~ q with probability min(1, p/q), but on rejection sample
    from p itself instead of norm(max(0, p - q)): t2 leans towards q."""
    accept = sum(min(p.get(x, 0.0), qx) for x, qx in q.items())
    return {x: min(px, q.get(x, 0.0)) + (1 - accept) * px for x, px in p.items()}


def draws(dist: dict, n: int) -> dict:
    """Counts of n draws from a distribution over outcomes (the negative controls' samples)."""
    keys = sorted(dist)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(keys), size=n, p=np.array([dist[k] for k in keys]) / sum(dist.values()))
    return {keys[i]: int(c) for i, c in zip(*np.unique(picked, return_counts=True))}


def chi_square_pvalue(counts: dict, expected: dict, n: int) -> float:
    """Pearson's goodness of fit; bins expecting fewer than 5 samples are pooled (the test's
    chi-square approximation needs that)."""
    keys = sorted(expected)
    total = sum(expected.values())
    exp = np.array([expected[k] / total * n for k in keys])
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    assert sum(counts.values()) == obs.sum(), "a sample fell outside the model's support"
    small = exp < 5
    if small.any():
        exp = np.append(exp[~small], exp[small].sum())
        obs = np.append(obs[~small], obs[small].sum())
    return float(scipy_stats.chisquare(obs, exp).pvalue)


def sample_first_two(lm: KangarooLM, prompt: list[int], **penalties: float) -> dict[tuple[int, int], int]:
    """Counts of (t1, t2) over N_SAMPLES seeds; t2 comes from a one-draft Kangaroo cycle."""
    counts: dict[tuple[int, int], int] = {}
    rejected = 0
    for seed in range(N_SAMPLES):
        r = lm.generate(prompt, 2, temperature=TEMPERATURE, top_k=TOP_K, seed=seed, tau=0.0, gamma=1, **penalties)
        key = tuple(r.token_ids)
        counts[key] = counts.get(key, 0) + 1
        rejected += r.stats.draft_n_accepted == 0
    assert 0 < rejected < N_SAMPLES  # both branches (the draft kept, the model's own token) ran
    return counts


def test_speculative_sampling_matches_model_distribution(tiny):
    prompt = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    p1, p2, q2 = conditionals(tiny, prompt)
    exact = joint(p1, p2)
    # the draft is far from the model (total variation ~0.7), so a wrong rule would be visible
    tv = np.mean([sum(abs(p2[t].get(x, 0) - q2[t].get(x, 0)) for x in set(p2[t]) | set(q2[t])) / 2 for t in p1])
    assert tv > 0.2

    counts = sample_first_two(tiny, prompt)
    assert chi_square_pvalue(counts, exact, N_SAMPLES) > ALPHA

    # Negative control: as many draws from a subtly wrong rule fail the same test.
    wrong = joint(p1, {t: wrong_rule_textbook_without_residual(p2[t], q2[t]) for t in p1})
    assert chi_square_pvalue(draws(wrong, N_SAMPLES), exact, N_SAMPLES) < ALPHA


def test_penalties_keep_the_penalized_distribution(tiny):
    """With repetition penalties the verified row of t2 is penalized with t1 and the adapter's
    q is not: t2 must follow the penalized p. The same samples fail against the unpenalized
    joint, so the test sees whether the penalties were applied."""
    penalties = dict(repeat_penalty=1.2, presence_penalty=5.0)  # t1 mostly stays in the top 4, less likely
    prompt = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    p1, p2, _ = conditionals(tiny, prompt, **penalties)
    counts = sample_first_two(tiny, prompt, **penalties)
    assert chi_square_pvalue(counts, joint(p1, p2), N_SAMPLES) > ALPHA
    _, unpenalized, _ = conditionals(tiny, prompt)
    wrong = joint(p1, unpenalized)
    inside = {k: c for k, c in counts.items() if k in wrong}  # the penalties also move tokens into the top k
    assert chi_square_pvalue(inside, wrong, sum(inside.values())) < ALPHA


def test_draft_vocabulary_keeps_the_distribution(tiny, tmp_path):
    """FR-Spec: the draft head scores only a subset of tokens, so q is 0 outside it. Tokens the
    model likes but the draft cannot propose must still come out at their exact rate (as the
    model's own token where the draft is not it)."""
    prompt = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    p1, p2, q2 = conditionals(tiny, prompt)
    # after every first token, leave out a second token the model may pick but the draft rarely
    # proposes (so that drafts and model still agree sometimes and both branches run)
    banned = {min(p2[t1], key=lambda x: q2[t1].get(x, 0.0)) for t1 in p1}
    vocab = [t for t in range(tiny.engine.n_vocab) if t not in banned]
    default_adapter = tiny.engine.adapter_info["path"]
    tiny.load_adapter(make_adapter(tiny, tmp_path / "vocab-adapter.gguf", exit_layer=1, init="random", seed=4,
                                   random_std=0.15, draft_vocab=vocab))
    try:
        counts = sample_first_two(tiny, prompt)
    finally:
        tiny.load_adapter(default_adapter)
    assert sum(c for (t1, t2), c in counts.items() if t2 in banned) > 0
    assert chi_square_pvalue(counts, joint(p1, p2), N_SAMPLES) > ALPHA


def test_prompt_lookup_drafts_keep_the_distribution(tiny):
    """A prompt-lookup draft is certain (q is all on one token): it is kept when the model's
    sample is x (probability p(x)); when it is kept the last verified row gives a further token. The prompt repeats, after its last token, each likely first token followed by
    some token, so that after most first tokens the lookup has a two-token match to continue."""
    base = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    p1, p2, _ = conditionals(tiny, base)
    likely = sorted(p1, key=p1.get, reverse=True)
    # after t1 the lookup proposes what followed (base[-1], t1) earlier: one of t1's likely successors
    prefix = [t for t1 in likely for t in (base[-1], t1, max(p2[t1], key=p2[t1].get))]
    prompt = prefix + base
    p1, p2, _ = conditionals(tiny, prompt)
    counts: dict[tuple[int, int], int] = {}
    lookups = kept = 0
    for seed in range(N_SAMPLES):
        # three tokens: t1 from the prompt's pass, then a cycle that may draft one lookup token
        r = tiny.generate(prompt, 3, temperature=TEMPERATURE, top_k=TOP_K, seed=seed, tau=0.0, gamma=1, lookup=True)
        key = tuple(r.token_ids[:2])
        counts[key] = counts.get(key, 0) + 1
        lookups += r.stats.drafter("lookup").cycles > 0
        kept += r.stats.drafter("lookup").draft_n_accepted > 0
    assert N_SAMPLES // 4 < lookups and 0 < kept < lookups  # lookups ran; both branches taken
    assert chi_square_pvalue(counts, joint(p1, p2), N_SAMPLES) > ALPHA


def test_bonus_row_token_keeps_the_distribution(tiny):
    """With a bonus row the cycle also verifies the row after its last draft: when the draft is
    kept, the next token is sampled from that row. Three tokens (t1 from the prompt's pass, then
    a one-draft cycle with room for its bonus row) must follow the model's joint distribution."""
    prompt = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    p1, p2, _ = conditionals(tiny, prompt)
    e = tiny.engine
    p3 = {(t1, t2): transform(e.forward(prompt + [t1, t2], 0, e.n_layer, 0, "logits", True)[-1])
          for t1 in p1 for t2 in p2[t1]}
    exact = {(t1, t2, t3): p1[t1] * p2[t1][t2] * c
             for t1 in p1 for t2 in p2[t1] for t3, c in p3[(t1, t2)].items()}
    counts: dict[tuple[int, int, int], int] = {}
    bonus_kept = rejected = 0
    for seed in range(N_SAMPLES):
        r = tiny.generate(prompt, 3, temperature=TEMPERATURE, top_k=TOP_K, seed=seed, tau=0.0, gamma=1, lookup=False)
        key = tuple(r.token_ids)
        counts[key] = counts.get(key, 0) + 1
        assert r.stats.bonus_rows >= 1  # the first cycle had room for it
        # kept: one cycle added the draft and the bonus row's token; rejected: a second cycle followed
        first_kept = r.stats.cycles == 1 and r.stats.draft_n_accepted == 1
        bonus_kept += first_kept
        rejected += not first_kept
    assert 0 < bonus_kept < N_SAMPLES and rejected > 0  # both branches ran
    assert chi_square_pvalue(counts, exact, N_SAMPLES) > ALPHA


class EvenTokens:
    """A constraint (the decoder's LogitsMask) that allows the even token ids at every position,
    with rollback(), so drafts are masked too; it keeps the drafts it was given and rolled back."""

    def __init__(self):
        self.given: list[int] = []
        self.drafts: list[int] = []

    def allowed(self, address: int, n_bytes: int) -> None:
        ctypes.memset(address, 0x55, n_bytes)  # bits 0, 2, 4, ... of every byte

    def accept(self, token: int) -> None:
        self.given.append(token)

    def rollback(self, n: int) -> None:
        self.drafts += self.given[-n:]
        del self.given[-n:]


def even(logits: np.ndarray) -> np.ndarray:
    out = logits.copy()
    out[1::2] = -np.inf
    return out


def test_masked_drafts_keep_the_masked_distribution(tiny):
    """Under a constraint the adapter drafts from its distribution restricted to the allowed
    tokens, and verification compares the draft with the model's sample from its masked row: t1
    and t2 must follow the model's masked joint. Draws from a rule that keeps the unmasked
    adapter's drafts fail the test (they fall outside the masked model's support)."""
    prompt = tiny.tokenize("<|im_start|>user\nThe quick brown fox<|im_end|>\n")
    e = tiny.engine
    p1 = transform(even(e.forward(prompt, 0, e.n_layer, 0, "logits", True)[-1]))
    p2, q2_unmasked = {}, {}
    for t1 in p1:
        p2[t1] = transform(even(e.forward(prompt + [t1], 0, e.n_layer, 0, "logits", True)[-1]))
        adapter = e.adapter_logits(e.forward(prompt + [t1], 0, 1, 0, "hidden", True), 0)[-1]
        q2_unmasked[t1] = transform(adapter)
    exact = joint(p1, p2)

    draft = DraftOptions(tau=0.0, gamma=1, lookup=False)
    counts: dict[tuple[int, int], int] = {}
    rejected = 0
    drafts: list[int] = []
    for seed in range(N_SAMPLES):
        mask = EvenTokens()
        tiny.reset()
        sampling = SamplingParams(temperature=TEMPERATURE, top_k=TOP_K, seed=seed)
        out = [t for step in decode_steps(e, prompt, sampling, draft, 2, mask) for t in step]
        counts[tuple(out)] = counts.get(tuple(out), 0) + 1
        rejected += e.stats().draft_n_accepted == 0
        drafts += mask.drafts
    assert len(drafts) == N_SAMPLES and all(t % 2 == 0 for t in drafts)  # every draft was masked
    assert 0 < rejected < N_SAMPLES  # both branches ran
    assert chi_square_pvalue(counts, exact, N_SAMPLES) > ALPHA

    wrong = joint(p1, q2_unmasked)  # every draft of the unmasked adapter kept
    # it keeps drafts the masked model gives p = 0 (odd tokens), which chi_square_pvalue refuses
    with pytest.raises(AssertionError, match="outside the model's support"):
        chi_square_pvalue(draws(wrong, N_SAMPLES), exact, N_SAMPLES)


def filtered(logits: np.ndarray, temperature: float, top_p: float = 1.0, min_p: float = 0.0) -> dict[int, float]:
    """llama.cpp's filters in its order: top-p and min-p on the untempered softmax, then the
    temperature on the survivors."""
    order = np.argsort(-logits, kind="stable")
    w = np.exp(logits[order] - logits[order[0]])
    keep = len(order)
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(w / w.sum()), top_p) + 1)
    kept = [i for i in range(keep) if w[i] >= min_p]
    z = np.exp((logits[order[kept]] - logits[order[0]]) / temperature)
    return {int(order[i]): float(p) for i, p in zip(kept, z / z.sum())}


# the tiny model is very sure of itself (its top token ~0.98 after this prompt): the cuts sit in
# its tail, and a hot temperature spreads what they keep
@pytest.mark.parametrize("filters", [dict(), dict(top_p=0.99), dict(min_p=0.002)], ids=["temperature", "top_p", "min_p"])
def test_each_filter_samples_its_distribution(tiny, filters):
    """The first token over many seeds, with the temperature alone (no candidate is sorted), top-p
    (a sorted prefix) or min-p (a cut at the maximum), follows the filtered softmax; draws from
    the unfiltered one (a filter skipped) or another temperature fail the same test."""
    temperature = TEMPERATURE
    prompt = tiny.tokenize("a b c d e f")
    e = tiny.engine
    logits = e.forward(prompt, 0, e.n_layer, 0, "logits", True)[-1]
    EOG = -1  # the engine does not return an end-of-generation token: they are one outcome here

    def outcomes(dist: dict[int, float]) -> dict[int, float]:
        out: dict[int, float] = {}
        for t, p in dist.items():
            out[EOG if e.is_eog(t) else t] = out.get(EOG if e.is_eog(t) else t, 0.0) + p
        return out

    exact = outcomes(filtered(logits, temperature, **filters))
    counts: dict[int, int] = {}
    for seed in range(N_SAMPLES):
        out = next(decode_steps(e, prompt, SamplingParams(temperature=temperature, seed=seed, **filters),
                                DraftOptions(speculative=False), 1))
        t = out[0] if out else EOG
        counts[t] = counts.get(t, 0) + 1
    assert len(counts) > 3
    assert chi_square_pvalue(counts, exact, N_SAMPLES) > ALPHA
    if filters:  # a skipped filter lets tokens outside the filtered support through
        with pytest.raises(AssertionError, match="outside the model's support"):
            chi_square_pvalue(draws(outcomes(filtered(logits, temperature)), N_SAMPLES), exact, N_SAMPLES)
    else:
        wrong = outcomes(filtered(logits, temperature * 1.5))
        assert chi_square_pvalue(draws(wrong, N_SAMPLES), exact, N_SAMPLES) < ALPHA

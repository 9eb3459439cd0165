"""Kangaroo speculative decoding is lossless: greedy output equals plain greedy output token for
token, sampling keeps the model's exact distribution, and the caches stay consistent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from adapters import make_adapter
from conftest import TEST_THREADS, chat_prompt, load_questions
from kangaroo_edge import EngineError, KangarooLM
from kangaroo_edge.types import stats_dict

N_PROMPTS = 20
N_NEW = 128
# (exit layer, tau, gamma) cycled over the prompts. An exit just below the last layer with the
# model's own attention block drafts well (many multi-token acceptances); an exit at layer 2
# drafts badly (mostly rejections). tau=0 always drafts gamma tokens; gamma=1 drafts one;
# tau=None is the speculation controller, which mixes plain steps and cycles. "deep-vocab"
# drafts from every other token id only (an FR-Spec draft head): its drafts are often not even
# proposable, yet the output must not change.
SETTINGS = [("shallow", 0.6, 6), ("deep", 0.0, 4), ("deep", 0.6, 6), ("shallow", 0.0, 1), ("deep", 0.0, 1),
            ("shallow", None, 6), ("deep", None, 4), ("deep-vocab", 0.0, 4)]


def exit_layers(lm: KangarooLM) -> dict[str, int]:
    return {"shallow": 2, "deep": lm.engine.n_layer - 1}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smollm, qwen) -> dict:
    out = {}
    for name, lm in (("smollm", smollm), ("qwen", qwen)):
        d = tmp_path_factory.mktemp(f"adapters-{name}")
        out[name] = {kind: make_adapter(lm, d / f"{kind}.gguf", layer) for kind, layer in exit_layers(lm).items()}
        out[name]["deep-vocab"] = make_adapter(lm, d / "deep-vocab.gguf", exit_layers(lm)["deep"],
                                               draft_vocab=range(0, lm.engine.n_vocab, 2))
    return out


@pytest.mark.parametrize("model", ["smollm", "qwen"])
def test_greedy_kangaroo_equals_plain(request, adapters, model):
    lm: KangarooLM = request.getfixturevalue(model)
    accepted_multi = 0
    for i, q in enumerate(load_questions(N_PROMPTS)):
        kind, tau, gamma = SETTINGS[i % len(SETTINGS)]
        lm.load_adapter(adapters[model][kind])
        prompt = chat_prompt(lm, q)
        lm.reset()
        plain = lm.generate(prompt, N_NEW, speculative=False)
        lm.reset()
        spec = lm.generate(prompt, N_NEW, speculative=True, tau=tau, gamma=gamma)
        assert spec.draft.speculative and spec.stats.cycles + spec.stats.plain_steps > 0
        assert spec.token_ids == plain.token_ids, (q["question_id"], kind, tau, gamma)
        assert spec.finish_reason == plain.finish_reason
        assert spec.stats.draft_n >= spec.stats.cycles
        if gamma == 1:
            assert spec.stats.draft_n == spec.stats.cycles
        if tau == 0.0:
            # always drafts gamma, except once fewer than gamma tokens remain to the budget: at
            # most gamma - 1 such cycles (each adds a token), each drafting at least one
            assert spec.stats.draft_n >= gamma * spec.stats.cycles - (gamma - 1) ** 2
        accepted_multi += sum(spec.stats.accepted_hist[2:])
    assert accepted_multi > 0  # the deep adapter exercised acceptance of several drafts in a row


# sampling settings cycled over the prompts: llama.cpp's filters, penalties, a hot temperature
SAMPLING = [dict(temperature=0.8, top_p=0.95), dict(temperature=1.0, top_k=40, repeat_penalty=1.1),
            dict(temperature=0.6, min_p=0.05, presence_penalty=0.5), dict(temperature=1.5)]


@pytest.mark.parametrize("model", ["smollm", "qwen"])
def test_sampled_kangaroo_equals_plain_for_each_seed(request, adapters, model):
    """The token at each position is sampled with noise keyed by (seed, position) (sampling.h),
    and a draft is kept iff it is that token: for a seed, sampled output with drafting forced,
    bonus rows, prompt lookup or the controller is plain sampled decoding's, token for token."""
    lm: KangarooLM = request.getfixturevalue(model)
    kept = 0
    for i, q in enumerate(load_questions(12)):
        kind, tau, gamma = SETTINGS[i % len(SETTINGS)]
        sampling = dict(SAMPLING[i % len(SAMPLING)], seed=1000 + i)
        lm.load_adapter(adapters[model][kind])
        prompt = chat_prompt(lm, q)
        plain = lm.generate(prompt, 64, speculative=False, **sampling)
        spec = lm.generate(prompt, 64, speculative=True, tau=tau, gamma=gamma, lookup=i % 2 == 0, **sampling)
        assert spec.token_ids == plain.token_ids, (q["question_id"], kind, tau, gamma, sampling)
        kept += spec.stats.draft_n_accepted
    assert kept > 0  # drafts were kept, not only replaced


@pytest.mark.parametrize("gamma", [1, 4])
def test_bonus_row_verifies_a_confident_last_draft(smollm, adapters, gamma):
    """tau = 0: drafting always runs to gamma with a confident last draft, so every cycle with
    room verifies one more row (the last draft's), and a fully accepted cycle adds gamma + 1
    tokens. Output stays plain decoding's."""
    smollm.load_adapter(adapters["smollm"]["deep"])
    full_accepts = 0
    for q in load_questions(3):
        prompt = chat_prompt(smollm, q)
        smollm.reset()
        plain = smollm.generate(prompt, 64, speculative=False)
        smollm.reset()
        spec = smollm.generate(prompt, 64, tau=0.0, gamma=gamma, lookup=False)
        assert spec.token_ids == plain.token_ids, q["question_id"]
        s = spec.stats
        # only the cycles near the token budget lack the room (at most gamma of them)
        assert s.cycles - gamma <= s.bonus_rows <= s.cycles
        # a bonus cycle adds its accepted drafts plus one token of the model's (the correction
        # or the bonus row's); without the row a fully accepted cycle adds no token of its own
        assert s.draft_n_accepted + s.bonus_rows <= s.cycle_tokens <= s.draft_n_accepted + s.cycles
        full_accepts += sum(s.accepted_hist[gamma:])
    assert full_accepts > 0  # cycles whose bonus row gave a token happened
    costs = smollm.cost_model()["drafters"]["adapter"]
    assert costs["bonus_step_measured"] and 0 < costs["bonus_step_seconds"]


@pytest.mark.parametrize("model", ["smollm", "qwen"])
def test_greedy_prompt_lookup_equals_plain(request, adapters, model):
    """Prompt-lookup drafts go through the whole model as one batch of rows: with a fixed rule
    (a draft after every repeated bigram, so many cycles, long and short, crossing the attention span's
    boundaries as the context grows) the output must stay plain decoding's."""
    lm: KangarooLM = request.getfixturevalue(model)
    lm.load_adapter(adapters[model]["shallow"])
    lookups = kept = 0
    for q in load_questions(8):
        prompt = chat_prompt(lm, q)
        lm.reset()
        plain = lm.generate(prompt, N_NEW, speculative=False)
        lm.reset()
        spec = lm.generate(prompt, N_NEW, tau=0.6, gamma=6, lookup=True)
        assert spec.token_ids == plain.token_ids, q["question_id"]
        lookups += spec.stats.drafter("lookup").cycles
        kept += spec.stats.drafter("lookup").draft_n_accepted
    assert lookups > 0 and kept > 0


def test_controller_drafts_copied_text_by_prompt_lookup(smollm, adapters):
    """Asked to repeat a passage, the model copies it: the controller's lookup drafts are right
    and it keeps using them (an untrained adapter could not draft this), output unchanged."""
    smollm.load_adapter(adapters["smollm"]["shallow"])
    passage = ("The red kangaroo is the largest of all kangaroos, the largest terrestrial mammal native to "
               "Australia, and the largest extant marsupial. It is found across mainland Australia, avoiding "
               "only the more fertile areas, such as the southern and eastern coasts.")
    prompt = smollm.apply_chat_template([{"role": "user", "content": "Repeat this text word for word:\n\n" + passage}])
    smollm.reset()
    plain = smollm.generate(prompt, 64, speculative=False)
    smollm.reset()
    off = smollm.generate(prompt, 64, lookup=False)
    assert off.token_ids == plain.token_ids and off.stats.drafter("lookup").cycles == 0
    smollm.reset()
    on = smollm.generate(prompt, 64)
    assert on.token_ids == plain.token_ids
    lookup = on.stats.drafter("lookup")
    assert on.draft.lookup and lookup.cycles > 0
    assert lookup.draft_n_accepted > lookup.cycles  # more than one copied token per verification
    assert lookup.draft_n_accepted <= lookup.draft_n and on.stats.draft_n_accepted >= lookup.draft_n_accepted
    model = smollm.cost_model()
    assert sum(model["drafters"]["lookup"]["calibration"]["count"]) >= lookup.cycles


@pytest.mark.parametrize("tau", [0.0, None])
def test_stats_are_consistent(smollm, adapters, tau):
    smollm.load_adapter(adapters["smollm"]["deep"])
    r = smollm.generate(chat_prompt(smollm, load_questions(1)[0]), 64, tau=tau, gamma=4)
    s = r.stats
    assert r.draft.tau == tau
    assert sum(s.accepted_hist) == s.cycles
    assert sum(a * n for a, n in enumerate(s.accepted_hist)) == s.draft_n_accepted
    assert s.draft_n_accepted <= s.draft_n
    assert sum(d.cycles for d in s.by_drafter) == s.cycles
    assert sum(d.draft_n_accepted for d in s.by_drafter) == s.draft_n_accepted
    # a cycle adds its accepted drafts, plus the model's own token when it rejected one
    assert s.draft_n_accepted <= s.cycle_tokens <= s.draft_n_accepted + s.cycles
    assert s.cycles == 0 or s.mean_accepted == pytest.approx(s.cycle_tokens / s.cycles)
    # the first token comes from the prompt's forward pass; the controller's plain steps add one each
    if r.finish_reason == "length":
        assert len(r.token_ids) == 1 + s.cycle_tokens + s.plain_steps
    assert s.predicted_n == len(r.token_ids) and s.prompt_tokens == len(r.prompt_token_ids)
    if tau is not None:
        assert s.plain_steps == 0
    if s.cycles:
        assert s.draft_ms > 0 and s.verify_ms > 0


def test_controller_switches_off_speculation_that_does_not_pay(smollm, tmp_path):
    """Random adapter weights: drafts are essentially never right, so every cycle costs more
    than the plain step it replaces. The controller must notice and decode plainly, trying a
    draft only now and then."""
    smollm.load_adapter(make_adapter(smollm, tmp_path / "random.gguf", 2, init="random"))
    prompt = chat_prompt(smollm, load_questions(4)[3])
    smollm.reset()
    plain = smollm.generate(prompt, 128, speculative=False)
    smollm.reset()
    r = smollm.generate(prompt, 128)
    assert r.token_ids == plain.token_ids
    s = r.stats
    assert r.draft.tau is None  # the controller
    # adapter cycles (prompt lookup's, if the answer repeats itself, are another drafter's)
    adapter_cycles = s.drafter("adapter").cycles
    assert s.plain_steps > 3 * adapter_cycles, stats_dict(s)
    model = smollm.cost_model()
    adapter = model["drafters"]["adapter"]
    assert model["plain_seconds"] > 0 and adapter["draft_step_seconds"] > 0
    # what it learned about the drafts: confident or not, they were wrong
    assert sum(adapter["calibration"]["count"]) >= adapter_cycles


def test_speculation_off_steps_keep_the_adapter_cache_exact(smollm, tmp_path):
    """Steps the controller decodes plainly write the adapter's K/V in the same graph as the
    model's. Whatever path wrote each position (prompt prefill, off-step, draft step), the adapter
    must read back what one batched adapter pass over the exit-layer states computes."""
    import numpy as np

    smollm.load_adapter(make_adapter(smollm, tmp_path / "random.gguf", 2, init="random"))
    prompt = chat_prompt(smollm, load_questions(4)[3])
    smollm.reset()
    r = smollm.generate(prompt, 96)
    assert r.stats.plain_steps > 3 * r.stats.drafter("adapter").cycles, stats_dict(r.stats)  # mostly off-steps
    e = smollm.engine
    n = e.n_past  # positions in every cache: the prompt and all generated tokens but the pending one
    tokens = smollm.tokenize(prompt) + list(r.token_ids)
    hidden = e.forward(tokens[:n], 0, 2, 0, "hidden", True)  # exit-layer states [n, n_embd]
    # the last position attending over the cache as the generation left it ...
    cached = e.adapter_logits(np.ascontiguousarray(hidden[n - 1:]), n - 1)[0]
    # ... and over K/V that one batched pass writes for every position
    batched = e.adapter_logits(hidden, 0)[n - 1]
    assert int(cached.argmax()) == int(batched.argmax())
    assert np.abs(cached - batched).max() < 1e-2 * np.abs(batched).max()


def test_plain_continuation_after_kangaroo_uses_consistent_caches(smollm, adapters):
    """K/V written during speculation (including rejected drafts that were rolled back) must be
    exactly what plain decoding would have written."""
    smollm.load_adapter(adapters["smollm"]["deep"])
    prompt = smollm.tokenize(chat_prompt(smollm, load_questions(2)[1]))
    smollm.reset()
    reference = smollm.generate(prompt, 80, speculative=False).token_ids
    smollm.reset()
    first = smollm.generate(prompt, 48, speculative=True, tau=0.0, gamma=6).token_ids
    assert first == reference[:48]
    # continue plainly from the cache the Kangaroo run left behind
    rest = smollm.generate(prompt + first, 32, speculative=False).token_ids
    assert rest == reference[48:80]
    # and speculate again from that state
    again = smollm.generate(prompt + first, 32, speculative=True, tau=0.0, gamma=3).token_ids
    assert again == reference[48:80]


def test_stream_equals_non_stream_with_speculation(smollm, adapters):
    smollm.load_adapter(adapters["smollm"]["deep"])
    prompt = chat_prompt(smollm, load_questions(3)[2])
    full = smollm.generate(prompt, 60)
    chunks = list(smollm.generate(prompt, 60, stream=True))
    assert [t for c in chunks for t in c.token_ids] == full.token_ids
    assert "".join(c.text for c in chunks) == full.text


def test_max_tokens_is_exact_with_speculation(smollm, adapters):
    smollm.load_adapter(adapters["smollm"]["deep"])
    for n in (1, 2, 7):
        r = smollm.generate("Once upon a time, in a land far away,", n, tau=0.0, gamma=6)
        assert len(r.token_ids) == n and r.finish_reason == "length"


def test_speculative_false_is_plain(smollm, adapters):
    smollm.load_adapter(adapters["smollm"]["deep"])
    r = smollm.generate("Hello", 8, speculative=False)
    assert r.draft.speculative is False and r.stats.cycles == r.stats.draft_n == 0


# ---- bad adapters ------------------------------------------------------------------------------

def test_adapter_for_another_model(qwen, adapters):
    with pytest.raises(EngineError, match="made for another model"):
        qwen.load_adapter(adapters["smollm"]["shallow"])
    assert qwen.generate("Hi", 2, speculative=False).token_ids  # still usable


def test_adapter_with_other_fingerprint(tmp_path, smollm):
    bad = make_adapter(smollm, tmp_path / "fp.gguf", 2, fingerprint="0123456789abcdef")
    with pytest.raises(EngineError, match=r"fingerprint is 0123456789abcdef"):
        KangarooLM(smollm.model_path, adapter_path=bad, n_ctx=64, n_threads=TEST_THREADS)


def test_adapter_exit_layer_out_of_range(tmp_path, smollm):
    bad = make_adapter(smollm, tmp_path / "exit.gguf", 2)
    from kangaroo_edge.convert.adapter_gguf import read_adapter_gguf, write_adapter_gguf
    meta, tensors = read_adapter_gguf(bad)
    write_adapter_gguf(tmp_path / "exit30.gguf", tensors, dataclasses.replace(meta, exit_layer=smollm.engine.n_layer))
    with pytest.raises(EngineError, match="exit layer 30"):
        smollm.load_adapter(tmp_path / "exit30.gguf")


def test_corrupt_and_foreign_adapter_files(tmp_path, smollm, adapters):
    data = Path(adapters["smollm"]["shallow"]).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError, match="cut.gguf"):
        smollm.load_adapter(tmp_path / "cut.gguf")
    with pytest.raises(EngineError, match="not a Kangaroo adapter"):
        smollm.load_adapter(smollm.model_path)  # a base model is not an adapter
    with pytest.raises(FileNotFoundError):
        smollm.load_adapter(tmp_path / "missing.gguf")


def test_bad_tau_gamma(smollm, adapters):
    smollm.load_adapter(adapters["smollm"]["shallow"])
    for kw in ({"tau": -0.1}, {"tau": 1.01}, {"gamma": 0}, {"gamma": -2}):
        with pytest.raises(ValueError):
            smollm.generate("Hi", 4, **kw)


def test_draft_vocabulary_outside_the_model_is_rejected(smollm, tmp_path):
    n_vocab = smollm.engine.n_vocab
    bad = make_adapter(smollm, tmp_path / "vocab.gguf", 2, draft_vocab=[0, 1, n_vocab + 5])
    with pytest.raises(EngineError, match=r"kangaroo\.draft\.vocab must list distinct token ids in \[0, "):
        smollm.load_adapter(bad)

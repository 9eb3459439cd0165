"""Adapter training (torch side): the adapter's math, feature shards, the fit loop (one process and
DDP under torchrun), the adapter GGUF, and reading the real default model.

The fit tests use a tiny synthetic "base model": a random tied LM head (vocab 64, n_embd 32) and
features made by a fixed random teacher adapter, so there is something exactly learnable.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter

from kangaroo_edge.convert.adapter_gguf import (AdapterMeta, adapter_state_to_tensors, read_adapter_gguf,
                                                tensors_to_adapter_state, write_adapter_gguf)
from kangaroo_edge.train.adapter_model import AdapterConfig, KangarooAdapter
from kangaroo_edge.train.base_model import (load_layer_attention, load_lm_head, model_fingerprint,
                                            read_base_model_info)
from kangaroo_edge.train.feature_shards import (FeatureShards, FeatureShardWriter, SequenceDataset,
                                                append_features, collate_sequences)
from kangaroo_edge.train.feature_shards import main as fs_main
from kangaroo_edge.train.fit import FitConfig, fit, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
V, E, H, HKV, D, N_LAYER, EXIT = 64, 32, 4, 2, 8, 4, 1
TINY_CFG = AdapterConfig(E, H, HKV, D, 1e-5, 10000.0, "normal")


# ---------------------------------------------------------------- synthetic base model and features

def write_tiny_base(path: Path) -> None:
    """A llama GGUF with just what training reads: metadata, vocabulary, tied head, attention
    weights of every layer and the output norm."""
    rng = np.random.default_rng(0)
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_feed_forward_length(2 * E)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(V)])
    w.add_tensor("token_embd.weight", (rng.standard_normal((V, E)) * 0.5).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(E, np.float32))
    for layer in range(N_LAYER):
        w.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(E, np.float32))
        for name, shape in (("attn_q", (H * D, E)), ("attn_k", (HKV * D, E)), ("attn_v", (HKV * D, E)),
                            ("attn_output", (E, H * D))):
            w.add_tensor(f"blk.{layer}.{name}.weight", (rng.standard_normal(shape) * 0.05).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def teacher() -> KangarooAdapter:
    """A fixed random adapter whose outputs stand in for the full model's: broad attention (small
    q/k) and a large value/output path, so the next token depends on the context, not only on x."""
    torch.manual_seed(1234)
    t = KangarooAdapter(TINY_CFG)
    with torch.no_grad():
        for lin, std in ((t.attn_q, 0.05), (t.attn_k, 0.05), (t.attn_v, 0.8), (t.attn_output, 0.8)):
            lin.weight.normal_(0, std)
    return t


def write_features(directory: Path, base: Path, n_seq: int = 200, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((V, E)).astype(np.float32)
    t = teacher()
    with FeatureShardWriter(directory, E, EXIT, model_fingerprint(base), shard_tokens=2000) as writer:
        for _ in range(n_seq):
            n = int(rng.integers(24, 48))
            tokens = rng.integers(0, V, n)
            exit_h = emb[tokens] + 0.1 * rng.standard_normal((n, E)).astype(np.float32)  # [n, E]
            with torch.no_grad():
                final = t(torch.from_numpy(exit_h)[None], torch.arange(n)[None])[0]         # [n, E]
            writer.add_sequence(tokens, exit_h, final.numpy(), int(rng.integers(4, 12)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_base(d / "base.gguf")
    write_features(d / "features", d / "base.gguf")
    return d


# ---------------------------------------------------------------- (a) fit learns, and resumes

def test_fit_lowers_heldout_loss_and_raises_agreement(tiny, tmp_path):
    out = tmp_path / "adapter.pt"
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out=str(out),
                    exit_layer=EXIT, lr=3e-2, epochs=6, batch_size=8, max_len=64, heldout_frac=0.2,
                    chunk=50, init="random", warmup_ratio=0.1, progress=False)
    history = fit(cfg)
    first, last = history[0], history[-1]
    assert [h["epoch"] for h in history] == list(range(7))
    assert last["heldout_loss"] < 0.5 * first["heldout_loss"]
    assert last["top1_agreement"] > first["top1_agreement"] + 0.15
    assert last["expected_acceptance"] > first["expected_acceptance"] + 0.2
    assert all(h["train_tokens_per_s"] > 0 for h in history[1:])
    assert json.loads(out.with_suffix(".metrics.json").read_text()) == history

    # resuming continues after the last finished epoch instead of starting over
    resumed = fit(FitConfig(**{**cfg.__dict__, "epochs": 7}))
    assert [h["epoch"] for h in resumed] == list(range(8))
    assert resumed[:7] == history
    assert load_checkpoint(out)["epoch"] == 7

    # and the converter script turns the checkpoint into an adapter GGUF
    gguf_path = tmp_path / "adapter.gguf"
    subprocess.run([sys.executable, str(REPO / "convert/adapter_to_gguf.py"), str(out), "-m",
                    str(tiny / "base.gguf"), "-o", str(gguf_path), "--tau", "0.5", "--gamma", "4"],
                   check=True, env=dict(os.environ))
    meta, tensors = read_adapter_gguf(gguf_path)
    assert (meta.exit_layer, meta.tau, meta.gamma) == (EXIT, 0.5, 4)
    assert meta.fingerprint == model_fingerprint(tiny / "base.gguf")
    assert tensors["adapter.attn_q.weight"].dtype == np.float16


def test_conversion_keeps_the_fits_draft_vocabulary(tiny, tmp_path):
    # a head trained on 16 of the 64 tokens must ship as that head, not as the full vocabulary
    # (features of its own: the restricted fit caches the teacher beside them, which other tests count)
    write_features(tmp_path / "features", tiny / "base.gguf", n_seq=60)
    out = tmp_path / "restricted.pt"
    fit(FitConfig(features=str(tmp_path / "features"), model=str(tiny / "base.gguf"), out=str(out), exit_layer=EXIT,
                  epochs=1, batch_size=8, max_len=64, heldout_frac=0.2, draft_vocab=16, progress=False))
    trained = load_checkpoint(out)["draft_vocab"]
    assert len(trained) == 16
    gguf_path = tmp_path / "restricted.gguf"
    subprocess.run([sys.executable, "-m", "kangaroo_edge.cli.main", "convert", "adapter", str(out), "-m",
                    str(tiny / "base.gguf"), "-o", str(gguf_path)], check=True, env=dict(os.environ))
    meta, _ = read_adapter_gguf(gguf_path)
    assert sorted(meta.draft_vocab) == sorted(trained)


def test_fit_rejects_features_of_another_exit_layer(tiny, tmp_path):
    cfg = FitConfig(features=str(tiny / "features"), model=str(tiny / "base.gguf"), out=str(tmp_path / "a.pt"),
                    exit_layer=EXIT + 1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="exit layer"):
        fit(cfg)


# ---------------------------------------------------------------- (b) DDP under torchrun

def test_fit_under_torchrun_with_two_processes(tiny, tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "kangaroo_edge.train.fit", "--features", str(tiny / "features"), "--model",
           str(tiny / "base.gguf"), "-o", str(out), "--exit-layer", str(EXIT), "--epochs", "2",
           "--batch-size", "8", "--max-len", "64", "--heldout-frac", "0.2", "--lr", "3e-2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 2
    hist = ckpt["history"]
    assert all(math.isfinite(h["heldout_loss"]) for h in hist)
    assert hist[-1]["heldout_loss"] < hist[0]["heldout_loss"]
    # every held-out window was scored exactly once across the two ranks
    single = FeatureShards(tiny / "features")
    _, held = single.split(0.2, 0)
    n_held = sum(length - resp for _, length, resp in map(single.index_row, held))
    assert hist[0]["heldout_positions"] == n_held

    # with a draft vocabulary, the two processes share the teacher's cache: each computes half the
    # shards (rank 0 logs its own), then both read all of it
    shutil.copytree(tiny / "features", tmp_path / "features")
    cmd[cmd.index("--features") + 1] = str(tmp_path / "features")
    cmd[cmd.index("-o") + 1] = str(tmp_path / "ddp-restricted.pt")
    proc = subprocess.run(cmd + ["--draft-vocab", "32"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    n_shards = len(single.shard_names)
    assert proc.stderr.count("teacher: top-") == (n_shards + 1) // 2
    assert all((tmp_path / "features" / f"{name}.teacher32.{a}.npy").exists()
               for name in single.shard_names for a in ("ids", "probs"))


def test_teacher_cache_computed_ahead_of_the_fit(tiny, tmp_path):
    """`python -m kangaroo_edge.train.teacher` writes the cache a fit would: each shard's top-K
    of the full head's softmax over its final states; a second run finds nothing to do, and
    features of another model are refused before any work."""
    from kangaroo_edge.models import default_model_path

    shutil.copytree(tiny / "features", tmp_path / "features")
    cmd = [sys.executable, "-m", "kangaroo_edge.train.teacher", str(tmp_path / "features"), "-m", str(tiny / "base.gguf")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    shards = FeatureShards(tmp_path / "features")
    assert first.stdout.count("teacher: top-") == len(shards.shard_names) > 1
    head = load_lm_head(tiny / "base.gguf", GGUFReader(str(tiny / "base.gguf")))
    k = min(32, V)
    for name in shards.shard_names:
        final = torch.from_numpy(np.asarray(shards.shard_array(name, "final"), dtype=np.float32))
        want = torch.topk(torch.softmax(final @ head.T, dim=-1), k, dim=-1)
        ids = np.load(tmp_path / "features" / f"{name}.teacher{k}.ids.npy")
        probs = np.load(tmp_path / "features" / f"{name}.teacher{k}.probs.npy")
        assert ids.shape == (len(final), k)
        assert np.array_equal(ids[:, 0], want.indices[:, 0].numpy())
        assert np.allclose(probs.astype(np.float32), want.values.numpy(), atol=1e-3)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "teacher: top-" not in again.stdout

    other = subprocess.run(cmd[:-1] + [str(default_model_path())], capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "features were made with model" in other.stderr
    missing = subprocess.run(cmd[:3] + [str(tmp_path / "nothing")] + cmd[4:], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not a feature directory" in missing.stderr


# ---------------------------------------------------------------- (c) feature shards

def _random_sequence(rng, n_embd=8):
    n = int(rng.integers(3, 20))
    return (rng.integers(0, 1000, n), rng.standard_normal((n, n_embd)), rng.standard_normal((n, n_embd)),
            int(rng.integers(0, n)))


def test_feature_shards_round_trip_and_append(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [_random_sequence(rng) for _ in range(30)]
    d = tmp_path / "feats"
    with FeatureShardWriter(d, 8, 3, "abc", shard_tokens=50) as w:
        for s in seqs[:20]:
            w.add_sequence(*s)
        assert w.n_sequences == 20 and w.n_sequences_stored < 20  # some still buffered
    w = FeatureShardWriter(d, 8, 3, "abc", shard_tokens=50)
    assert w.n_sequences_stored == 20
    train_before, held_before = FeatureShards(d).split(0.3, seed=7)
    for s in seqs[20:]:
        w.add_sequence(*s)
    w.close()

    r = FeatureShards(d)
    assert (len(r), r.n_embd, r.exit_layer, r.fingerprint) == (30, 8, 3, "abc")
    assert len(r.meta["shards"]) > 2
    assert r.meta["n_tokens"] == sum(len(s[0]) for s in seqs)
    for i, (tokens, exit_h, final, resp) in enumerate(seqs):
        got = r.sequence(i)
        assert got.tokens.dtype == np.int32 and got.exit_hidden.dtype == np.float16
        np.testing.assert_array_equal(got.tokens, tokens)
        np.testing.assert_array_equal(got.exit_hidden, exit_h.astype(np.float16))
        np.testing.assert_array_equal(got.final_normed, final.astype(np.float16))
        assert got.response_start == resp

    # the split is deterministic and appending never moves an old sequence to the other side
    train, held = r.split(0.3, seed=7)
    assert np.array_equal(train, r.split(0.3, seed=7)[0])
    assert sorted(np.concatenate([train, held])) == list(range(30))
    assert np.array_equal(held[held < 20], held_before) and np.array_equal(train[train < 20], train_before)
    assert 0 < len(held) < 30

    with pytest.raises(ValueError, match="fingerprint"):
        FeatureShardWriter(d, 8, 3, "other")
    with pytest.raises(ValueError, match="shape"):
        FeatureShardWriter(tmp_path / "x", 8, 3, "abc").add_sequence([1, 2], np.zeros((2, 7)), np.zeros((2, 8)), 0)


def test_features_made_in_two_parts_append_to_one_directory(tmp_path):
    """Two processes each extract half of the responses; appending the second directory to the
    first gives the sequences, numbers and split one run over all of them gives."""
    rng = np.random.default_rng(2)
    seqs = [_random_sequence(rng) for _ in range(24)]
    for name, part in (("one", seqs), ("a", seqs[:10]), ("b", seqs[10:])):
        with FeatureShardWriter(tmp_path / name, 8, 3, "abc", shard_tokens=40) as w:
            for s in part:
                w.add_sequence(*s)
    (tmp_path / "b" / "shard-00000.teacher4.ids.npy").write_bytes(b"cache")  # moves with its shard
    n_shards_a = len(FeatureShards(tmp_path / "a").meta["shards"])
    assert fs_main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    merged, one = FeatureShards(tmp_path / "a"), FeatureShards(tmp_path / "one")
    assert len(merged) == 24 and merged.meta["n_tokens"] == one.meta["n_tokens"]
    for i in range(24):
        got, want = merged.sequence(i), one.sequence(i)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.exit_hidden, want.exit_hidden)
        np.testing.assert_array_equal(got.final_normed, want.final_normed)
        assert got.response_start == want.response_start
    assert all(np.array_equal(x, y) for x, y in zip(merged.split(0.3, 7), one.split(0.3, 7)))
    assert (tmp_path / "a" / f"shard-{n_shards_a:05d}.teacher4.ids.npy").read_bytes() == b"cache"
    assert not (tmp_path / "b" / "meta.json").exists()  # its shards belong to the other directory now
    with FeatureShardWriter(tmp_path / "c", 8, 4, "abc") as w:
        w.add_sequence(*seqs[0])
    with pytest.raises(ValueError, match="exit_layer"):
        append_features(tmp_path / "a", tmp_path / "c")


def test_sequence_dataset_windows_and_collate(tmp_path):
    rng = np.random.default_rng(1)
    with FeatureShardWriter(tmp_path, 4, 2, "f") as w:
        w.add_sequence(np.arange(10), rng.standard_normal((10, 4)), rng.standard_normal((10, 4)), 6)
        w.add_sequence(np.arange(3), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), 1)
    ds = SequenceDataset(FeatureShards(tmp_path), [0, 1], max_len=4)
    # sequence 0 (10 positions, trained from 6): windows at 0 (no trained position, dropped), 4, 8
    assert ds.windows == [(0, 4), (0, 8), (1, 0)]
    batch = collate_sequences([ds[k] for k in range(len(ds))])
    assert batch["exit"].shape == (3, 4, 4) and batch["exit"].dtype == torch.float16
    assert batch["positions"][0].tolist() == [4, 5, 6, 7]
    assert batch["loss_mask"].tolist() == [[False, False, True, True], [True, True, False, False],
                                           [False, True, True, False]]
    assert batch["valid"].sum().item() == 4 + 2 + 3
    # with the prompts' positions (teacher-forced text) every window and every position is trained
    every = SequenceDataset(FeatureShards(tmp_path), [0, 1], max_len=4, prompt_positions=True)
    assert every.windows == [(0, 0), (0, 4), (0, 8), (1, 0)]
    assert all(every[k]["loss_mask"].all() for k in range(len(every)))


# ---------------------------------------------------------------- (d) adapter GGUF

def _meta(**kw) -> AdapterMeta:
    return AdapterMeta(**{"base_arch": "qwen2", "fingerprint": "0123456789abcdef", "n_embd": E, "n_head": H,
                          "n_head_kv": HKV, "head_dim": D, "rms_eps": 2.0 ** -20, "rope_freq_base": 1e6,
                          "exit_layer": 2, **kw})


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_adapter_gguf_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    cfg = AdapterConfig(E, H, HKV, D, 1e-6, 1e6, "neox", bias=True)
    model = KangarooAdapter(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    tensors = adapter_state_to_tensors(model.state_dict())
    assert len(tensors) == 9
    path = tmp_path / "a.gguf"
    write_adapter_gguf(path, tensors, _meta(tau=0.5, gamma=4), dtype=dtype)
    meta, got = read_adapter_gguf(path)
    assert meta == _meta(tau=0.5, gamma=4)
    assert got.keys() == tensors.keys()
    for name, arr in got.items():
        is_proj = name.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"))
        assert arr.dtype == (np.float16 if dtype == "f16" and is_proj else np.float32), name
        np.testing.assert_allclose(arr, tensors[name], rtol=1e-3 if dtype == "f16" else 0)
    # the weights read back drive the same adapter
    model2 = KangarooAdapter(cfg)
    model2.load_state_dict({k: torch.from_numpy(v) for k, v in tensors_to_adapter_state(got).items()})
    x, pos = torch.randn(1, 5, E), torch.arange(5)[None]
    torch.testing.assert_close(model2(x, pos), model(x, pos), atol=0.05 if dtype == "f16" else 1e-6, rtol=0.01)


def _raw_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], meta: AdapterMeta) -> None:
    """Writes a GGUF bypassing write_adapter_gguf's validation."""
    w = GGUFWriter(str(path), arch)
    if arch == "kangaroo-adapter":
        w.add_string("general.name", meta.name)
        w.add_string("kangaroo.base.architecture", meta.base_arch)
        w.add_string("kangaroo.base.fingerprint", meta.fingerprint)
        for key, value in (("embedding_length", meta.n_embd), ("attention.head_count", meta.n_head),
                           ("attention.head_count_kv", meta.n_head_kv), ("attention.key_length", meta.head_dim),
                           ("exit_layer", meta.exit_layer), ("draft.gamma", meta.gamma)):
            w.add_uint32(f"kangaroo.{key}", value)
        for key, value in (("attention.layer_norm_rms_epsilon", meta.rms_eps),
                           ("rope.freq_base", meta.rope_freq_base), ("draft.tau", meta.tau)):
            w.add_float32(f"kangaroo.{key}", value)
    for name, arr in tensors.items():
        w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_adapter_gguf_bad_files(tmp_path, tiny):
    tensors = adapter_state_to_tensors(KangarooAdapter(TINY_CFG).state_dict())
    meta = _meta()
    wrong_arch = tmp_path / "llama.gguf"
    _raw_gguf(wrong_arch, "llama", tensors, meta)
    with pytest.raises(ValueError, match=r"llama\.gguf.*general\.architecture is 'llama'"):
        read_adapter_gguf(wrong_arch)
    with pytest.raises(ValueError, match="not a Kangaroo adapter"):
        read_adapter_gguf(tiny / "base.gguf")

    missing = tmp_path / "missing.gguf"
    _raw_gguf(missing, "kangaroo-adapter", {k: v for k, v in tensors.items() if "attn_v" not in k}, meta)
    with pytest.raises(ValueError, match=r"missing\.gguf: missing tensor 'adapter\.attn_v\.weight'"):
        read_adapter_gguf(missing)

    bad_shape = tmp_path / "shape.gguf"
    _raw_gguf(bad_shape, "kangaroo-adapter", {**tensors, "adapter.attn_k.weight": np.zeros((H * D, E))}, meta)
    with pytest.raises(ValueError, match=r"shape\.gguf: tensor 'adapter\.attn_k\.weight' has shape"):
        read_adapter_gguf(bad_shape)

    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"definitely not a gguf file")
    with pytest.raises(ValueError, match="junk.gguf"):
        read_adapter_gguf(not_gguf)
    with pytest.raises(ValueError, match="missing tensor"):
        write_adapter_gguf(tmp_path / "w.gguf", {k: v for k, v in tensors.items() if "q.w" not in k}, meta)


# ---------------------------------------------------------------- the adapter's math (docs/formats.md)

def reference_adapter(sd: dict[str, np.ndarray], cfg: AdapterConfig, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """docs/formats.md written out with loops, in float64. x: [n, n_embd] -> normed [n, n_embd]."""
    def rms(v, w):
        return v / np.sqrt((v ** 2).mean(-1, keepdims=True) + cfg.rms_eps) * w

    def rope(v, p):  # v: [n_heads, head_dim] at position p
        out = v.copy()
        for i in range(cfg.head_dim // 2):
            theta = p * cfg.rope_freq_base ** (-2 * i / cfg.head_dim)
            a, b = (2 * i, 2 * i + 1) if cfg.rope_type == "normal" else (i, i + cfg.head_dim // 2)
            out[:, a] = v[:, a] * math.cos(theta) - v[:, b] * math.sin(theta)
            out[:, b] = v[:, a] * math.sin(theta) + v[:, b] * math.cos(theta)
        return out

    n = len(x)
    a = rms(x, sd["attn_norm.weight"])
    q = a @ sd["attn_q.weight"].T + sd.get("attn_q.bias", 0)
    k = a @ sd["attn_k.weight"].T + sd.get("attn_k.bias", 0)
    v = a @ sd["attn_v.weight"].T + sd.get("attn_v.bias", 0)
    q = np.stack([rope(q[t].reshape(cfg.n_head, -1), pos[t]) for t in range(n)])     # [n, H, D]
    k = np.stack([rope(k[t].reshape(cfg.n_head_kv, -1), pos[t]) for t in range(n)])  # [n, Hkv, D]
    v = v.reshape(n, cfg.n_head_kv, -1)
    o = np.zeros((n, cfg.n_head, cfg.head_dim))
    group = cfg.n_head // cfg.n_head_kv
    for h in range(cfg.n_head):
        for t in range(n):
            s = np.array([q[t, h] @ k[j, h // group] for j in range(t + 1)]) / math.sqrt(cfg.head_dim)
            w = np.exp(s - s.max())
            o[t, h] = (w / w.sum()) @ v[: t + 1, h // group]
    y = x + o.reshape(n, -1) @ sd["attn_output.weight"].T
    return rms(y, sd["output_norm.weight"])


@pytest.mark.parametrize("rope_type,bias", [("normal", False), ("neox", True)])
def test_adapter_matches_the_format_spec(rope_type, bias):
    torch.manual_seed(0)
    cfg = AdapterConfig(24, 6, 2, 4, 1e-5, 500.0, rope_type, bias)
    model = KangarooAdapter(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    x, pos = torch.randn(7, 24, dtype=torch.float64), torch.arange(3, 10)
    got = model(x[None], pos[None])[0]
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(got.detach().numpy(), reference_adapter(sd, cfg, x.numpy(), pos.numpy()),
                               rtol=1e-6, atol=1e-9)

    # left padding with a key padding mask gives the same states for the real tokens
    xp = torch.cat([torch.randn(2, 24, dtype=torch.float64), x])[None]
    pp = torch.cat([torch.zeros(2, dtype=torch.long), pos])[None]
    valid = torch.tensor([[False, False] + [True] * 7])
    torch.testing.assert_close(model(xp, pp, key_padding_mask=valid)[0, 2:], got)


# ---------------------------------------------------------------- (e) the real default model

# Both models are test dependencies: a missing one is a broken setup and fails loudly (the
# locators raise FileNotFoundError saying which package to install).
from kangaroo_edge.models import default_model_path, qwen_coder_path  # noqa: E402


def test_reads_the_default_model():
    path = default_model_path()
    reader = GGUFReader(str(path))  # parsing the vocabulary takes seconds: share one reader
    info = read_base_model_info(path, reader)
    assert (info.arch, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.head_dim) == \
        ("llama", 30, 576, 9, 3, 64)
    assert (info.n_vocab, info.tied, info.has_bias, info.rope_type) == (49152, True, False, "normal")
    assert info.rope_freq_base == 100000.0 and abs(info.rms_eps - 1e-5) < 1e-9
    head = load_lm_head(path, reader)
    assert head.shape == (49152, 576) and head.dtype == torch.float32 and not head.requires_grad
    assert torch.isfinite(head).all() and head.abs().max() > 0.1
    layer = load_layer_attention(path, 2, reader)
    assert layer["attn_k.weight"].shape == (192, 576) and torch.isfinite(layer["attn_q.weight"]).all()
    # the layer initialises an adapter of the model's shape
    KangarooAdapter(AdapterConfig.from_base(info)).load_state_dict(layer)
    # the value the C++ engine computes for this file (`Engine.fingerprint`)
    assert model_fingerprint(path) == "06cb26290ed46a4f"


def test_reads_the_qwen2_model():
    path = qwen_coder_path()
    reader = GGUFReader(str(path))
    info = read_base_model_info(path, reader)
    assert (info.arch, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.head_dim) == \
        ("qwen2", 24, 896, 14, 2, 64)
    assert (info.n_vocab, info.tied, info.has_bias, info.rope_type) == (151936, False, True, "neox")
    head = load_lm_head(path, reader)
    assert head.shape == (151936, 896) and torch.isfinite(head).all()
    layer = load_layer_attention(path, 3, reader)
    assert layer["attn_k.bias"].shape == (128,)
    KangarooAdapter(AdapterConfig.from_base(info)).load_state_dict(layer)
    assert model_fingerprint(path) == "f36261c162dff3f9"  # the engine's value

"""HF -> GGUF export checked against transformers with llama.cpp as the loader; and model files.

The tiny models are random, so the only way for llama.cpp's logits to match transformers' is for
every tensor to land under the right name, with the right layout (llama's q/k permutation), and
the hyper-parameters to be right. Five families: SmolLM2-like llama, Qwen2, Qwen3, Llama 3 (its
RoPE scaling) and Gemma 3 (local layers, post-norms, GeGLU); and our engine on each export.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
import tokenizers  # the reference tokenizer
import torch
import transformers  # the reference forward pass

from kangaroo_edge import models
from kangaroo_edge.convert.hf_to_gguf import convert, llama3_rope_factors
from kangaroo_edge.llamacpp import LlamaCpp
from tiny_models import ARCHS, make_tiny_gguf, make_tiny_hf_model

GGUF_ARCH = {"llama3": "llama"}  # tiny-model directory name -> general.architecture
GGML_TYPE_F32 = 0
N_THREADS = 2
PROMPT = "<|im_start|>user\nWhat's 12+30? It's 42.<|im_end|>\n<|im_start|>assistant\n"
SAMPLES = [
    PROMPT,
    "Hello, world! I'll   say it\tagain:\n\n  twice.",
    "Numbers 1234567 and 3.14159; code: def f(x):\n    return x**2",
    "UTF-8: café naïve 東京 🙂 — done",
    "w = f(x)\nprint(w)\n",
]

# Tolerances on logits (std ~4 for these models). f32 weights with an f32 KV cache leave only
# summation order as a difference (observed max |diff| ~1e-5), so 1e-3 is strict yet robust.
# f16 weights round every matrix entry by up to 2^-11 relative, which compounds over the layers
# and dot products (observed ~1.5e-2); 5e-2 keeps margin while a wrong permutation, bias or norm
# gives errors of 1-7.
TOLERANCE = {"f32": dict(atol=1e-3, rtol=1e-3), "f16": dict(atol=5e-2, rtol=2e-2)}
# Gemma 3's GeGLU: ggml's CPU kernel looks GELU up in a table indexed by the gate value rounded
# to f16 (relative error up to 2^-11 on every FFN activation, through six layers), where
# transformers computes it in f32: observed max |diff| 4.7e-3 with f32 weights, so 2e-2 there.
# With f16 weights (observed 1.2e-2) the f16 bound above already covers it.
GEMMA3_TOLERANCE = {"f32": dict(atol=2e-2, rtol=1e-2), "f16": TOLERANCE["f16"]}


def tolerance(arch: str, outtype: str) -> dict:
    return (GEMMA3_TOLERANCE if arch == "gemma3" else TOLERANCE)[outtype]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    for arch in ARCHS:
        make_tiny_hf_model(root, arch)
    return root


def hf_tokenizer(root: Path, arch: str):
    return tokenizers.Tokenizer.from_file(str(root / f"tiny-{arch}" / "tokenizer.json"))


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model.float().eval()(torch.tensor([ids])).logits[0].numpy()  # [n_tokens, n_vocab]


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    # An f32 KV cache: llama.cpp's default f16 cache alone would add ~5e-3 to the f32 comparison.
    llm = LlamaCpp(path, 128, N_THREADS, logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    return llm.all_logits(ids)  # [n_tokens, n_vocab]


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(tiny_root, arch, outtype):
    path = make_tiny_gguf(tiny_root, arch, outtype)
    ids = hf_tokenizer(tiny_root, arch).encode(PROMPT).ids
    assert 16 <= len(ids) <= 40

    hf_dir = tiny_root / f"tiny-{arch}"
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    expected = hf_logits(hf, ids)
    got = llama_cpp_logits(path, ids)
    assert got.shape == expected.shape
    assert expected.std() > 1.0, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, **tolerance(arch, outtype))


def test_sharded_bf16_checkpoint(tiny_root, tmp_path):
    """Real checkpoints are often bf16 and split into shards with an index."""
    src, dst = tiny_root / "tiny-qwen2", tmp_path / "sharded"
    hf = transformers.AutoModelForCausalLM.from_pretrained(src)
    # Parameters only: hf.to(bfloat16) would also round the RoPE frequencies (a buffer).
    for p in hf.parameters():
        p.data = p.data.to(torch.bfloat16)
    hf.save_pretrained(dst, max_shard_size="50KB")
    assert (dst / "model.safetensors.index.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)

    path = convert(dst, tmp_path / "sharded.gguf", outtype="f32")
    ids = list(range(3, 23))
    # bf16 -> f32 is exact, so this compares like the f32 case.
    np.testing.assert_allclose(llama_cpp_logits(path, ids), hf_logits(hf, ids), **TOLERANCE["f32"])


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_matches_hf(tiny_root, arch):
    path = make_tiny_gguf(tiny_root, arch, "f16")
    hf_tok = hf_tokenizer(tiny_root, arch)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in SAMPLES:
        ids = hf_tok.encode(text).ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
        assert llm.detokenize(ids, special=True) == text.encode()


@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_metadata(tiny_root, arch):
    reader = gguf.GGUFReader(make_tiny_gguf(tiny_root, arch, "f16"))
    long_lists = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    meta = {k: f.contents() for k, f in reader.fields.items() if k not in long_lists}
    tensors = {t.name: t for t in reader.tensors}
    config = transformers.AutoConfig.from_pretrained(tiny_root / f"tiny-{arch}")
    im_end = hf_tokenizer(tiny_root, arch).token_to_id("<|im_end|>")

    g = GGUF_ARCH.get(arch, arch)
    assert meta["general.architecture"] == g
    assert meta[f"{g}.block_count"] == config.num_hidden_layers
    assert meta[f"{g}.attention.head_count_kv"] == config.num_key_value_heads
    pre = {"llama": "smollm", "llama3": "llama-bpe"}.get(arch, "qwen2")
    assert meta["tokenizer.ggml.pre"] == pre
    assert meta["tokenizer.ggml.eos_token_id"] == im_end
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == config.vocab_size
    # SmolLM2-like llama: tied head, no biases; Qwen2-like: untied head and q/k/v biases; the
    # others tied, with q/k norms (Qwen3, Gemma 3) or Llama 3's RoPE factors.
    assert ("output.weight" in tensors) == (arch == "qwen2")
    assert ("blk.0.attn_q.bias" in tensors) == (arch == "qwen2")
    assert ("blk.0.attn_q_norm.weight" in tensors) == (arch in ("qwen3", "gemma3"))
    assert ("rope_freqs.weight" in tensors) == (arch == "llama3")
    if arch in ("qwen3", "gemma3"):
        assert meta[f"{g}.attention.key_length"] == config.head_dim != config.hidden_size // config.num_attention_heads
    if arch == "gemma3":
        assert "blk.0.post_attention_norm.weight" in tensors and "blk.0.post_ffw_norm.weight" in tensors
        assert meta["gemma3.attention.sliding_window"] == config.sliding_window
        assert meta["gemma3.rope.freq_base"] == 1e6 and meta["gemma3.rope.freq_base_swa"] == 1e4
        assert "gemma3.attention.sliding_window_pattern" not in meta  # llama.cpp's default: 5 local, 1 global
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_llama3_rope_factors_match_transformers(tiny_root):
    """Our rope_freqs (dividing each frequency, as ggml does) reproduce transformers' own Llama 3
    frequencies."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.AutoConfig.from_pretrained(tiny_root / "tiny-llama3")
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    factors = llama3_rope_factors(config.to_dict())
    d = config.hidden_size // config.num_attention_heads
    base = 1.0 / 500000.0 ** (np.arange(0, d, 2) / d)
    assert len(set(np.round(factors, 4))) > 2  # all three branches: kept, divided, interpolated
    np.testing.assert_allclose(base / factors, inv_freq.numpy(), rtol=1e-5)


def test_cli_script(tiny_root, tmp_path):
    out = tmp_path / "cli.gguf"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, str(repo / "convert" / "hf_to_gguf.py"), str(tiny_root / "tiny-llama"),
         "-o", str(out), "--outtype", "f32"],
        check=True, capture_output=True, env=dict(os.environ),
    )
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.ALL_F32


def test_convert_rejects_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        convert(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


# --- model files ------------------------------------------------------------------------------


def test_default_model_is_a_gguf():
    path = models.default_model_path()
    assert path.is_file()
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert models.resolve_model(None) == path
    assert models.resolve_model(models.DEFAULT_MODEL_NAME) == path


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "kangaroo_no_such_package")
    with pytest.raises(FileNotFoundError, match="pip install kangaroo-no-such-package"):
        models.default_model_path()


def test_resolve_model_paths(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        models.resolve_model(missing)
    present = tmp_path / "m.gguf"
    present.write_bytes(b"GGUF")
    assert models.resolve_model(str(present)) == present


def test_qwen_coder_is_assembled_once(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    path = models.qwen_coder_path()
    assert path.parent == tmp_path / "models"
    assert path.stat().st_size == sum(p.stat().st_size for p in models.qwen_coder_part_paths())
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    # the file and the stamp of its checked sha256, no temp file left behind
    assert sorted(path.parent.iterdir()) == [path, path.with_name(path.name + ".sha256")]
    mtime = path.stat().st_mtime_ns
    assert models.resolve_model(models.QWEN_CODER_NAME) == path  # reused, not rebuilt
    assert path.stat().st_mtime_ns == mtime


# Our engine keeps K/V in F16 (llama.cpp's default too), which rounds every key and value by up to
# 2^-11 relative: with the f32 export that alone moves logits by ~5e-3, so 2e-2 leaves margin while
# a layout mistake in the export or the engine gives errors of 1-7 (Gemma 3, with its f16 GELU
# table too: observed 6e-3).
ENGINE_TOLERANCE = dict(atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_logits_match_transformers(tiny_root, arch):
    from kangaroo_edge import KangarooLM

    path = make_tiny_gguf(tiny_root, arch, "f32")
    ids = hf_tokenizer(tiny_root, arch).encode(PROMPT).ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_root / f"tiny-{arch}")
    expected = hf_logits(hf, ids)
    lm = KangarooLM(path, n_ctx=128, n_threads=N_THREADS)
    got = lm.engine.forward(ids, 0, lm.engine.n_layer, 0, "logits", True)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **ENGINE_TOLERANCE)


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_logits_match_llamacpp(tiny_root, arch):
    """With llama.cpp's own (F16) KV cache, as ours, the engine runs llama.cpp's graph of each
    architecture: observed max |diff| 0.0; the bound allows only another summation order."""
    from kangaroo_edge import KangarooLM

    path = make_tiny_gguf(tiny_root, arch, "f16")
    ids = hf_tokenizer(tiny_root, arch).encode(PROMPT).ids
    want = LlamaCpp(path, 128, N_THREADS, logits_all=True).all_logits(ids)
    lm = KangarooLM(path, n_ctx=128, n_threads=N_THREADS)
    got = lm.engine.forward(ids, 0, lm.engine.n_layer, 0, "logits", True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_convert_refuses_sentencepiece_tokenizers(tiny_root, tmp_path):
    """Gemma's and Llama 2's tokenizer.json are SentencePiece-style BPE, which llama.cpp reads as
    another tokenizer kind: refused, not written as a byte-level one."""
    src, dst = tiny_root / "tiny-gemma3", tmp_path / "spm"
    shutil.copytree(src, dst)
    tok = json.loads((dst / "tokenizer.json").read_text())
    tok["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace"}, {"type": "ByteFallback"}]}
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(NotImplementedError, match="SentencePiece"):
        convert(dst, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()

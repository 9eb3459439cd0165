"""Export a Hugging Face `LlamaForCausalLM` (Llama 1-3, with Llama 3's RoPE scaling),
`Qwen2ForCausalLM`, `Qwen3ForCausalLM` or `Gemma3ForCausalLM` checkpoint to GGUF.

Follows what llama.cpp's convert_hf_to_gguf.py does for these architectures, in a few hundred
lines and with only numpy and the `gguf` package (no torch): hyper-parameters as `{arch}.*` keys,
tensors renamed to ggml's names, llama's q/k rows permuted for ggml's RoPE, Llama 3's RoPE scaling
as a `rope_freqs` tensor, Gemma's norms shifted by one, and a byte-level BPE tokenizer written as
llama.cpp's "gpt2" tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
OUTTYPES = {
    "f32": (np.float32, gguf.LlamaFileType.ALL_F32),
    "f16": (np.float16, gguf.LlamaFileType.MOSTLY_F16),
}
DEFAULT_OUTTYPE = "f16"

# ---------------------------------------------------------------------------------------------
# Reading the checkpoint

# safetensors dtypes we read; BF16 is read as raw uint16 and widened below (numpy has no bf16).
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    if not archs or archs[0] not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{model_dir / 'config.json'}: architectures={archs}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return config


def _read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Tensors of one .safetensors file as float32/float16 arrays (memory-mapped where possible).

    The format: u64 header size, JSON header {name: {dtype, shape, data_offsets}}, raw data.
    """
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        data = raw[begin:end].view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            data = (data.astype(np.uint32) << 16).view(np.float32)  # bf16 is f32's top half
        yield name, data


def iter_checkpoint(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array) for every tensor, from model.safetensors or its sharded index."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(
            f"no model.safetensors (or model.safetensors.index.json) in {model_dir}; "
            "re-save the model with save_pretrained(safe_serialization=True)"
        )
    for file in files:
        yield from _read_safetensors(model_dir / file)


# ---------------------------------------------------------------------------------------------
# Hyper-parameters


def _rope_params(config: dict, layer_type: str = "full_attention") -> dict:
    """RoPE settings of one kind of layer, from any transformers version's config: >= 5 keeps them
    in `rope_parameters` (per layer type for Gemma 3), older ones in `rope_theta`/`rope_scaling`."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if layer_type in rope or "full_attention" in rope:
        rope = dict(rope.get(layer_type) or {})
    if "rope_theta" not in rope:
        key = "rope_local_base_freq" if layer_type == "sliding_attention" else "rope_theta"
        rope["rope_theta"] = config.get(key, 10000.0)
    return rope


def _rope_type(rope: dict) -> str:
    return rope.get("rope_type", rope.get("type", "default"))


def _rope_theta(config: dict) -> float:
    rope = _rope_params(config)
    if _rope_type(rope) not in ("default", "llama3", "linear"):
        raise NotImplementedError(f"RoPE scaling {_rope_type(rope)!r} is not supported by this converter")
    return float(rope["rope_theta"])


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Llama 3's RoPE scaling as llama.cpp stores it: `rope_freqs.weight` [head_dim/2], the factor
    that divides each frequency (1 for short wavelengths, `factor` for long ones, smoothly in
    between); None for any other RoPE."""
    rope = _rope_params(config)
    if _rope_type(rope) != "llama3":
        return None
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    factors = np.where(wavelen < old_ctx / high, 1.0,
                       np.where(wavelen > old_ctx / low, factor, 1.0 / ((1 - smooth) / factor + smooth)))
    return factors.astype(np.float32)


def gemma3_local_layers(config: dict) -> list[bool]:
    """Which layers use the sliding window: `layer_types`, or (older configs) every
    `sliding_window_pattern`-th layer global."""
    n = config["num_hidden_layers"]
    if config.get("layer_types"):
        return [t == "sliding_attention" for t in config["layer_types"][:n]]
    period = config.get("sliding_window_pattern", 6)
    return [bool(i % period < period - 1) for i in range(n)]


def write_hparams(writer: gguf.GGUFWriter, config: dict, arch: str) -> None:
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(_rope_theta(config))
    if _rope_type(_rope_params(config)) == "linear":  # positions divided by the factor
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(_rope_params(config)["factor"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    if head_dim != config["hidden_size"] // n_head or arch == "gemma3":  # llama.cpp assumes n_embd / n_head otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3":
        _write_gemma3_hparams(writer, config, head_dim)


def _write_gemma3_hparams(writer: gguf.GGUFWriter, config: dict, head_dim: int) -> None:
    if config.get("attn_logit_softcapping") is not None:
        raise NotImplementedError("Gemma 3 with attn_logit_softcapping is not supported (llama.cpp has none)")
    if config.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise NotImplementedError(f"Gemma 3 activation {config['hidden_activation']!r}: expected gelu_pytorch_tanh")
    if config.get("final_logit_softcapping"):
        writer.add_float32("gemma3.final_logit_softcapping", float(config["final_logit_softcapping"]))
    # q.k is scaled by query_pre_attn_scalar^-1/2; llama.cpp assumes 1/sqrt(head_dim) (but for the 27B)
    scalar = config.get("query_pre_attn_scalar", head_dim)
    if scalar != head_dim:
        writer.add_float32("gemma3.attention.scale", float(scalar) ** -0.5)
    local = gemma3_local_layers(config)
    if any(local):
        writer.add_uint32("gemma3.attention.sliding_window", int(config["sliding_window"]))
        writer.add_float32("gemma3.rope.freq_base_swa", float(_rope_params(config, "sliding_attention")["rope_theta"]))
        period = next((p for p in range(1, len(local) + 1)
                       if local == [bool(i % p < p - 1) for i in range(len(local))]), None)
        if period is None:
            writer.add_array("gemma3.attention.sliding_window_pattern", local)
        elif period != 6:  # 6: llama.cpp's default
            writer.add_uint32("gemma3.attention.sliding_window_pattern", period)
    local_rope = _rope_params(config, "sliding_attention")
    if _rope_type(local_rope) != "default":
        raise NotImplementedError(f"RoPE scaling {_rope_type(local_rope)!r} on local layers is not supported")


# ---------------------------------------------------------------------------------------------
# Tensors

# HF name (layer index replaced by {i}) -> ggml name; the ".weight"/".bias" suffix is kept.
_TENSOR_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{i}.input_layernorm": "blk.{i}.attn_norm",
    "model.layers.{i}.self_attn.q_proj": "blk.{i}.attn_q",
    "model.layers.{i}.self_attn.k_proj": "blk.{i}.attn_k",
    "model.layers.{i}.self_attn.v_proj": "blk.{i}.attn_v",
    "model.layers.{i}.self_attn.o_proj": "blk.{i}.attn_output",
    "model.layers.{i}.self_attn.q_norm": "blk.{i}.attn_q_norm",  # qwen3, gemma3
    "model.layers.{i}.self_attn.k_norm": "blk.{i}.attn_k_norm",
    "model.layers.{i}.post_attention_layernorm": "blk.{i}.ffn_norm",
    "model.layers.{i}.mlp.gate_proj": "blk.{i}.ffn_gate",
    "model.layers.{i}.mlp.up_proj": "blk.{i}.ffn_up",
    "model.layers.{i}.mlp.down_proj": "blk.{i}.ffn_down",
}
# Gemma 3 norms the attention output before its residual add (its post_attention_layernorm) and
# has a pre- and a post-norm around the MLP.
_GEMMA3_TENSOR_NAMES = {
    **_TENSOR_NAMES,
    "model.layers.{i}.post_attention_layernorm": "blk.{i}.post_attention_norm",
    "model.layers.{i}.pre_feedforward_layernorm": "blk.{i}.ffn_norm",
    "model.layers.{i}.post_feedforward_layernorm": "blk.{i}.post_ffw_norm",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def gguf_tensor_name(hf_name: str, arch: str = "llama") -> str:
    """'model.layers.3.self_attn.q_proj.bias' -> 'blk.3.attn_q.bias'."""
    names = _GEMMA3_TENSOR_NAMES if arch == "gemma3" else _TENSOR_NAMES
    base, _, suffix = hf_name.rpartition(".")
    m = _LAYER.match(base)
    key = _LAYER.sub("model.layers.{i}.", base) if m else base
    if key not in names or suffix not in ("weight", "bias"):
        raise ValueError(f"unexpected tensor {hf_name!r} in the checkpoint")
    return names[key].format(i=m.group(1) if m else "") + "." + suffix


def permute_for_ggml_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from HF's rotate-half RoPE layout to ggml's adjacent pairs.

    HF (llama) rotates dimension j with j + d/2; ggml's normal RoPE rotates 2j with 2j+1. So the
    new row 2j is old row j, and new row 2j+1 is old row j + d/2, within each head.
    w: [n_head*d, n_embd] (or [n_head*d] for a bias)
    """
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_tensor(hf_name: str, data: np.ndarray, arch: str, config: dict, dtype) -> np.ndarray:
    """The array written for one tensor: permuted for llama's q/k, Gemma's norms shifted, cast."""
    if arch == "llama" and ".self_attn.q_proj." in hf_name:
        data = permute_for_ggml_rope(data, config["num_attention_heads"])
    elif arch == "llama" and ".self_attn.k_proj." in hf_name:
        n_head_kv = config.get("num_key_value_heads") or config["num_attention_heads"]
        data = permute_for_ggml_rope(data, n_head_kv)
    elif arch == "gemma3" and hf_name.endswith("norm.weight"):
        data = data.astype(np.float32) + 1.0  # Gemma's RMSNorm multiplies by (1 + weight)
    # As llama.cpp does: norms and biases (1-D) stay f32, matrices take the output type.
    return np.ascontiguousarray(data, dtype=np.float32 if data.ndim == 1 else dtype)


def write_tensors(writer: gguf.GGUFWriter, model_dir: Path, arch: str, config: dict, dtype) -> None:
    # Gemma ties its head whatever the config says (transformers' default is tied there too)
    tied = config.get("tie_word_embeddings", arch == "gemma3")
    rope_factors = llama3_rope_factors(config) if arch == "llama" else None
    if rope_factors is not None:
        writer.add_tensor("rope_freqs.weight", rope_factors)
    for hf_name, data in iter_checkpoint(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):  # a buffer some old checkpoints saved
            continue
        if hf_name == "lm_head.weight" and tied:  # llama.cpp uses token_embd when output is absent
            continue
        data = convert_tensor(hf_name, data, arch, config, dtype)
        writer.add_tensor(gguf_tensor_name(hf_name, arch), data)


# ---------------------------------------------------------------------------------------------
# Tokenizer

# The Split regexes of the Qwen2 and Llama-3 tokenizers; they differ only in how digits group.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT_REGEX = QWEN2_SPLIT_REGEX.replace(r"\p{N}|", r"\p{N}{1,3}|", 1)


def detect_bpe_pre(pre_tokenizer: dict | None) -> str:
    """llama.cpp's `tokenizer.ggml.pre` name for a tokenizer.json pre_tokenizer.

    llama.cpp re-implements each known pre-tokenizer, keyed by name, so we recognise the few that
    llama/qwen2 models use by their structure (convert_hf_to_gguf hashes a sample tokenization).
    """
    steps = (pre_tokenizer or {}).get("pretokenizers") or [pre_tokenizer or {}]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # SmolLM/StarCoder: single digits, then GPT-2's regex
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        if regex == QWEN2_SPLIT_REGEX:
            return "qwen2"
        if regex == LLAMA3_SPLIT_REGEX:
            return "llama-bpe"
    logger.warning("unrecognised pre-tokenizer %s; writing 'default'", kinds)
    return "default"


def write_tokenizer(
    writer: gguf.GGUFWriter, model_dir: Path, n_vocab: int, pre: str | None = None
) -> None:
    """A byte-level BPE tokenizer.json as llama.cpp's "gpt2" tokenizer.

    Token strings are written as they appear in tokenizer.json (GPT-2's byte-to-unicode form),
    which is what llama.cpp expects; ids the tokenizer does not use (the embedding is often
    padded) get "[PAD{id}]" placeholders so that n_vocab matches the embedding rows.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (only tokenizer.json BPE is supported)")
    tok = json.loads(path.read_text(encoding="utf-8"))
    if tok["model"]["type"] != "BPE":
        raise NotImplementedError(f"{path}: tokenizer model {tok['model']['type']}, expected BPE")
    # SentencePiece-style BPE (Gemma's, Llama 2's: Metaspace and byte fallback) is llama.cpp's
    # "llama" tokenizer, which this converter does not write: refuse rather than mis-tokenize.
    decoder = tok.get("decoder") or {}
    decoders = [d.get("type") for d in decoder.get("decoders", [decoder])]
    if "ByteLevel" not in decoders:
        raise NotImplementedError(
            f"{path}: a SentencePiece-style tokenizer (decoder {decoders}); only byte-level BPE "
            "(GPT-2 style) is supported here: convert this model with llama.cpp's convert_hf_to_gguf.py")

    vocab, added_tokens = tok["model"]["vocab"], tok.get("added_tokens", [])
    max_id = max([*vocab.values(), *(t["id"] for t in added_tokens)])
    if max_id >= n_vocab:
        raise ValueError(f"{path}: token id {max_id} does not fit vocab_size {n_vocab}")

    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for text, i in vocab.items():
        tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for added in added_tokens:
        special = added.get("special", False)
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or detect_bpe_pre(tok.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges, bos/eos/pad ids, add_bos/add_eos flags and chat_template, read as convert_hf_to_gguf
    # reads them (tokenizer.json, tokenizer_config.json, config.json).
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)


# ---------------------------------------------------------------------------------------------
# Entry point


def convert(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    outtype: str = DEFAULT_OUTTYPE,
    name: str | None = None,
    pre: str | None = None,
) -> Path:
    """Write `model_dir`'s checkpoint to `out_path` as GGUF; returns the output path.

    outtype: "f32" or "f16" (1-D tensors stay f32 either way). pre: override the detected
    llama.cpp pre-tokenizer name.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r}; expected one of {', '.join(OUTTYPES)}")
    dtype, file_type = OUTTYPES[outtype]
    config = read_config(model_dir)
    arch = SUPPORTED_ARCHITECTURES[config["architectures"][0]]

    # Write beside the target and rename at the end, so a failed export leaves no broken file.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=out_path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(name or model_dir.name)
        writer.add_file_type(file_type)
        write_hparams(writer, config, arch)
        write_tokenizer(writer, model_dir, config["vocab_size"], pre)
        write_tensors(writer, model_dir, arch, config, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path

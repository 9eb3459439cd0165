"""Tiny random-weight Hugging Face models and their GGUF exports, for tests.

Each is shaped like the real model of its architecture (SmolLM2: tied head, special tokens first;
Qwen2.5: q/k/v biases, untied head here, special tokens appended, embedding padded past the
tokenizer; Llama 3: Llama 3's RoPE scaling; Qwen3: q/k norms, head size not n_embd/n_head;
Gemma 3: post-norms, GeGLU, 5 local layers with a short sliding window and their own RoPE base,
then a global one) but with hidden size 64, so it builds in a second and runs anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from kangaroo_edge.convert.hf_to_gguf import LLAMA3_SPLIT_REGEX, QWEN2_SPLIT_REGEX, convert

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we've got 3 apples.",
    "def add(a, b):\n    return a + b\n\nprint(add(40, 2))  # prints 42",
    "Speculative decoding drafts tokens cheaply, then the big model verifies them at once.",
    "Kangaroo exits early after a few layers; an adapter predicts the next token from there.",
    "I'll say: hello, world! You're welcome; they'd agree. Numbers: 1, 22, 333, 4444, 55555.",
    "Tabs\tand  double  spaces, newlines\n\nand UTF-8: café, naïve, 東京, emoji 🙂.",
    # Punctuation before letters and newlines after it split differently under Qwen2's regex
    # than under GPT-2's, so merges learned here tell the pre-tokenizers apart.
    "x = f(a)\ny = g(b)\nz = h(c)\nprint(x)\nprint(y)\nprint(z)\n",
]
TOKENIZER_VOCAB = 384  # 256 byte symbols + ~125 merges + the special tokens

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
MAX_POSITIONS = 256
# The model families, by directory name: "llama3" is a LlamaForCausalLM with Llama 3's RoPE.
ARCHS = ("llama", "qwen2", "qwen3", "llama3", "gemma3")
WIDE_HEAD_DIM = 32    # qwen3 / gemma3: 4 heads of 32 > HIDDEN, as Qwen3 and Gemma 3 have
GEMMA3_LAYERS = 6     # Gemma 3's pattern: 5 local layers, then a global one
GEMMA3_WINDOW = 8     # short enough that test prompts (16-40 tokens) slide past it
# Llama 3.1's scaling with the original context shrunk to 64, so that the head's frequencies fall
# on all three branches (kept, divided by `factor`, interpolated).
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
# Init-like scales for matrices, but a larger embedding / head scale so that the logits have a
# spread (std ~ 4) and comparisons are not dominated by a near-uniform distribution.
WEIGHT_STD, EMBED_STD, HEAD_STD, BIAS_STD, NORM_STD = 0.1, 0.5, 0.5, 0.2, 0.2


def _train_tokenizer(arch: str):
    """Byte-level BPE: SmolLM2-style pre-tokenizer for llama, Llama 3's for llama3, Qwen2's for
    the others."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if arch == "llama":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
    else:
        regex = LLAMA3_SPLIT_REGEX if arch == "llama3" else QWEN2_SPLIT_REGEX
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        # SmolLM2 has its special tokens at ids 0..2; Qwen appends them after the merges.
        special_tokens=SPECIAL_TOKENS if arch == "llama" else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    if arch != "llama":
        tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def _randomize(model, seed: int, norm_centre: float = 1.0) -> None:
    """Replace the init with seeded random weights; norms and biases not 1/0 so they matter.
    norm_centre 0 for Gemma, whose RMSNorm multiplies by (1 + weight)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(norm_centre + NORM_STD * noise)
            elif name.endswith(".bias"):
                p.copy_(BIAS_STD * noise)
            elif "embed_tokens" in name:
                p.copy_(EMBED_STD * noise)
            elif name.startswith("lm_head"):
                p.copy_(HEAD_STD * noise)
            else:
                p.copy_(WEIGHT_STD * noise)


def make_tiny_hf_model(tmpdir, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random model of one of ARCHS and its tokenizer; returns the directory."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")
    out = Path(tmpdir) / f"tiny-{arch}"
    out.mkdir(parents=True, exist_ok=True)

    tok = _train_tokenizer(arch)
    tok.save(str(out / "tokenizer.json"))
    n_tok = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    # As in the real models: SmolLM2's bos is <|im_start|>, Qwen has none; <|im_end|> ends a turn.
    bos = "<|im_start|>" if arch == "llama" else None
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHATML_TEMPLATE,
    }
    config_text = json.dumps(tokenizer_config, indent=2)
    (out / "tokenizer_config.json").write_text(config_text, encoding="utf-8")

    common = dict(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=ids[bos] if bos else None, eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    model = _hf_model(arch, n_tok, common)
    _randomize(model.float().eval(), seed, norm_centre=0.0 if arch == "gemma3" else 1.0)
    model.save_pretrained(out)
    return out


def _hf_model(arch: str, n_tok: int, common: dict):
    import transformers as tf

    if arch in ("llama", "llama3"):
        rope = dict(LLAMA3_ROPE, rope_theta=500000.0) if arch == "llama3" else {"rope_type": "default", "rope_theta": 10000.0}
        config = tf.LlamaConfig(vocab_size=n_tok, rms_norm_eps=1e-5, tie_word_embeddings=True,
                                **_rope_kwargs(tf.LlamaConfig, rope), **common)
        return tf.LlamaForCausalLM(config)
    if arch == "qwen2":
        # Qwen pads the embedding past the tokenizer (151936 > 151665): round up to 64 rows.
        vocab = (n_tok + 63) // 64 * 64
        config = tf.Qwen2Config(vocab_size=vocab, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                **_rope_kwargs(tf.Qwen2Config, {"rope_type": "default", "rope_theta": 10000.0}),
                                **common)
        return tf.Qwen2ForCausalLM(config)
    if arch == "qwen3":
        config = tf.Qwen3Config(vocab_size=n_tok, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                head_dim=WIDE_HEAD_DIM, attention_bias=False,
                                **_rope_kwargs(tf.Qwen3Config, {"rope_type": "default", "rope_theta": 1000000.0}),
                                **common)
        return tf.Qwen3ForCausalLM(config)
    # gemma3: q.k scaled by 1/sqrt(query_pre_attn_scalar) = 1/sqrt(head_dim), as llama.cpp assumes
    config = tf.Gemma3TextConfig(
        vocab_size=n_tok, rms_norm_eps=1e-6, tie_word_embeddings=True, head_dim=WIDE_HEAD_DIM,
        query_pre_attn_scalar=WIDE_HEAD_DIM, sliding_window=GEMMA3_WINDOW,
        hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None, attn_logit_softcapping=None,
        **_gemma3_rope_kwargs(tf.Gemma3TextConfig), **dict(common, num_hidden_layers=GEMMA3_LAYERS),
    )
    model = tf.Gemma3ForCausalLM(config)
    model.config.architectures = ["Gemma3ForCausalLM"]
    return model


def _rope_kwargs(config_class, rope: dict) -> dict:
    """RoPE settings as this transformers version takes them: `rope_parameters` (>= 5) or
    `rope_theta` + `rope_scaling`."""
    import inspect

    if "rope_parameters" in inspect.signature(config_class.__init__).parameters:
        return {"rope_parameters": rope}
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    return {"rope_theta": rope["rope_theta"], "rope_scaling": scaling if rope["rope_type"] != "default" else None}


def _gemma3_rope_kwargs(config_class) -> dict:
    """Global layers at base 1e6, local ones at 1e4 (Gemma 3's values)."""
    import inspect

    if "rope_parameters" in inspect.signature(config_class.__init__).parameters:
        return {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}
    return {"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0}


def make_tiny_gguf(tmpdir, arch: str = "llama", outtype: str = "f32") -> Path:
    """Convert the tiny model in `tmpdir` (made first if absent) with our converter."""
    model_dir = Path(tmpdir) / f"tiny-{arch}"
    if not (model_dir / "config.json").is_file():
        make_tiny_hf_model(tmpdir, arch)
    return convert(model_dir, Path(tmpdir) / f"tiny-{arch}-{outtype}.gguf", outtype=outtype)

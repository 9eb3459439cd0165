"""Tiny random-weight Hugging Face models (llama, qwen2) and their GGUF exports, for tests.

Each is shaped like the real model of its architecture (SmolLM2: tied head, special tokens first;
Qwen2.5: q/k/v biases, untied head here, special tokens appended, embedding padded past the
tokenizer) but with hidden size 64, so it builds in a second and runs anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from kangaroo_edge.convert.hf_to_gguf import QWEN2_SPLIT_REGEX, convert

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
# Init-like scales for matrices, but a larger embedding / head scale so that the logits have a
# spread (std ~ 4) and comparisons are not dominated by a near-uniform distribution.
WEIGHT_STD, EMBED_STD, HEAD_STD, BIAS_STD, NORM_STD = 0.1, 0.5, 0.5, 0.2, 0.2


def _train_tokenizer(arch: str):
    """Byte-level BPE: SmolLM2-style pre-tokenizer for llama, Qwen2's for qwen2."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if arch == "llama":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
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


def _randomize(model, seed: int) -> None:
    """Replace the init with seeded random weights; norms and biases not 1/0 so they matter."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_STD * noise)
            elif name.endswith(".bias"):
                p.copy_(BIAS_STD * noise)
            elif "embed_tokens" in name:
                p.copy_(EMBED_STD * noise)
            elif name.startswith("lm_head"):
                p.copy_(HEAD_STD * noise)
            else:
                p.copy_(WEIGHT_STD * noise)


def make_tiny_hf_model(tmpdir, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random `LlamaForCausalLM` / `Qwen2ForCausalLM` and tokenizer; returns the dir."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch not in ("llama", "qwen2"):
        raise ValueError(f"arch must be 'llama' or 'qwen2', not {arch!r}")
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
        max_position_embeddings=MAX_POSITIONS, rope_theta=10000.0,
        bos_token_id=ids[bos] if bos else None, eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=n_tok, rms_norm_eps=1e-5, tie_word_embeddings=True, **common
        )
        model = LlamaForCausalLM(config)
    else:
        # Qwen pads the embedding past the tokenizer (151936 > 151665): round up to 64 rows.
        vocab = (n_tok + 63) // 64 * 64
        config = Qwen2Config(
            vocab_size=vocab, rms_norm_eps=1e-6, tie_word_embeddings=False, **common
        )
        model = Qwen2ForCausalLM(config)
    _randomize(model.float().eval(), seed)
    model.save_pretrained(out)
    return out


def make_tiny_gguf(tmpdir, arch: str = "llama", outtype: str = "f32") -> Path:
    """Convert the tiny model in `tmpdir` (made first if absent) with our converter."""
    model_dir = Path(tmpdir) / f"tiny-{arch}"
    if not (model_dir / "config.json").is_file():
        make_tiny_hf_model(tmpdir, arch)
    return convert(model_dir, Path(tmpdir) / f"tiny-{arch}-{outtype}.gguf", outtype=outtype)

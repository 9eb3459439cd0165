"""Bad input gets a clear Python exception naming the problem and the file or parameter."""

from __future__ import annotations

import pytest

from kangaroo_edge import EngineError, KangarooLM, SamplingParams
from gguf_edit import copy_gguf

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)


def load(path, **kw):
    return KangarooLM(path, n_ctx=kw.pop("n_ctx", 256), n_threads=2, device="cpu", **kw)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"this is a text file, not a model\n" * 10)
    with pytest.raises(EngineError, match=r"notes\.gguf.*not a GGUF file"):
        load(bad)


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    with pytest.raises(EngineError, match="empty.gguf"):
        load(bad)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tmp_path, smollm_path, keep):
    data = smollm_path.read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(EngineError, match=r"truncated\.gguf.*truncated"):
        load(bad)


def test_truncated_header(tmp_path, smollm_path):
    bad = tmp_path / "header.gguf"
    bad.write_bytes(smollm_path.read_bytes()[:5000])
    with pytest.raises(EngineError, match="header.gguf"):
        load(bad)


def test_unsupported_architecture(tmp_path, smollm_path):
    bad = copy_gguf(smollm_path, tmp_path / "gpt2.gguf", set_str={"general.architecture": "gpt2"})
    with pytest.raises(EngineError, match=r"gpt2\.gguf.*unsupported architecture 'gpt2'") as e:
        load(bad)
    assert "runs: llama, qwen2, qwen3, gemma3" in str(e.value)


def test_missing_tensor(tmp_path, smollm_path):
    bad = copy_gguf(smollm_path, tmp_path / "holes.gguf", drop_tensors=["blk.3.ffn_up.weight"])
    with pytest.raises(EngineError, match=r"holes\.gguf.*'blk\.3\.ffn_up\.weight' is missing"):
        load(bad)


def test_missing_hparam(tmp_path, smollm_path):
    bad = copy_gguf(smollm_path, tmp_path / "nohp.gguf", drop_keys=["llama.block_count"])
    with pytest.raises(EngineError, match=r"nohp\.gguf.*llama\.block_count"):
        load(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_ctx": 0}, "n_ctx"),
    ({"n_ctx": -5}, "n_ctx"),
    ({"n_threads": 0}, "n_threads"),
    ({"device": "tpu"}, "device"),
])
def test_bad_load_parameters(smollm_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        KangarooLM(smollm_path, **{"n_ctx": 256, **kwargs})


def test_prompt_longer_than_context(smollm_path):
    lm = load(smollm_path, n_ctx=32)
    with pytest.raises(ValueError, match=r"prompt has \d+ tokens.*n_ctx=32"):
        lm.generate("word " * 100, max_tokens=4)
    # the model still works afterwards
    assert lm.generate("Hello", max_tokens=2).token_ids


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"tau": 1.5}, "tau"),
    ({"tau": float("nan")}, "tau"),
    ({"gamma": 0}, "gamma"),
    ({"seed": -1}, "seed"),
    ({"stop": [""]}, "stop"),
])
def test_bad_generation_parameters(smollm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        smollm.generate("Hello", **{"max_tokens": 4, **kwargs})


def test_bad_prompts(smollm):
    with pytest.raises(ValueError, match="empty"):
        smollm.generate("", max_tokens=4)
    with pytest.raises(ValueError, match="token id"):
        smollm.generate([1, 2, smollm.n_vocab + 5], max_tokens=4)


def test_sampling_params_validate():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=2.0)


def test_closed_model(smollm_path):
    lm = load(smollm_path)
    lm.close()
    with pytest.raises(RuntimeError, match="closed"):
        lm.generate("Hello", max_tokens=2)


@pytest.mark.parametrize("values, match", [
    ({"llama.rope.freq_base": float("inf")}, r"llama\.rope\.freq_base.*not a finite number"),
    ({"llama.attention.layer_norm_rms_epsilon": float("nan")}, r"layer_norm_rms_epsilon.*not a finite number"),
    ({"tokenizer.ggml.bos_token_id": 49152}, r"bos_token_id 49152 is outside the vocabulary of 49152"),
    ({"tokenizer.ggml.padding_token_id": 10 ** 9}, r"padding_token_id .* outside the vocabulary"),
], ids=["inf", "nan", "bos-id", "pad-id"])
def test_metadata_values_llamacpp_would_choke_on(tmp_path, smollm_path, values, match):
    """Non-finite floats pass range checks written as comparisons; out-of-range token ids reach
    llama.cpp's vocabulary loader. Both are refused before any of them is used."""
    bad = copy_gguf(smollm_path, tmp_path / "odd.gguf", set_values=values)
    with pytest.raises(EngineError, match=r"odd\.gguf.*" + match):
        load(bad)


def test_tokenizers_the_architectures_do_not_use_are_refused(tmp_path, smollm_path):
    bad = copy_gguf(smollm_path, tmp_path / "bert.gguf", set_str={"tokenizer.ggml.model": "bert"})
    with pytest.raises(EngineError, match=r"bert\.gguf.*tokenizer\.ggml\.model 'bert' is not one"):
        load(bad)


def test_tokenizer_arrays_of_the_wrong_length_are_refused(tmp_path, smollm_path):
    import gguf

    types = gguf.GGUFReader(str(smollm_path)).fields["tokenizer.ggml.token_type"].contents()
    short = copy_gguf(smollm_path, tmp_path / "short.gguf", set_values={"tokenizer.ggml.token_type": types[:-1]})
    with pytest.raises(EngineError, match=r"short\.gguf.*token_type must have 49152 entries"):
        load(short)
    odd = copy_gguf(smollm_path, tmp_path / "type.gguf", set_values={"tokenizer.ggml.token_type": [9] * len(types)})
    with pytest.raises(EngineError, match=r"type\.gguf.*unknown type 9"):
        load(odd)
    merges = copy_gguf(smollm_path, tmp_path / "merges.gguf", set_values={"tokenizer.ggml.merges": ["ab"]})
    with pytest.raises(EngineError, match=r"merges\.gguf.*merges has an entry that is not a pair"):
        load(merges)

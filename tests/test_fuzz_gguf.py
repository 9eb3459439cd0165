"""Hostile GGUF files: a short seeded run of benchmarks/fuzz_gguf.py (each case in a forked child,
so a crash is a failed case, not a dead pytest), and the crashes it found, as regressions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gguf import GGMLQuantizationType as T

from adapters import make_adapter
from conftest import REPO
from gguf_edit import copy_gguf
from kangaroo_edge import EngineError, KangarooLM

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

FUZZ_CASES = 100  # about 30 s; the long run is `python benchmarks/fuzz_gguf.py --cases 2000`


def test_seeded_fuzz_never_crashes(tmp_path, smollm_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fuzz_gguf.py"), "--cases", str(FUZZ_CASES), "--seed", "0",
         "--model", str(smollm_path), "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    print(json.dumps(summary["counts"]))
    assert summary["cases"] == FUZZ_CASES
    assert summary["failures"] == [], json.dumps(summary["failures"], indent=1)
    # both loaders were reached, and some mutants are still loadable (the checks are not too strict)
    counts = summary["counts"]
    assert counts.get("model/error", 0) > 0 and counts.get("adapter/error", 0) > 0
    assert counts.get("model/loaded", 0) + counts.get("adapter/loaded", 0) > 0
    assert proc.returncode == 0


def load(path):
    return KangarooLM(path, n_ctx=64, n_threads=1, device="cpu")


def test_norm_retyped_to_same_size_type_is_rejected(tmp_path, smollm_path):
    # F32 -> I32 keeps the byte size, so ggml's parser accepts it; its CPU kernels then abort
    bad = copy_gguf(smollm_path, tmp_path / "i32norm.gguf", retype={"blk.3.attn_norm.weight": T.I32})
    with pytest.raises(EngineError, match=r"i32norm\.gguf.*'blk\.3\.attn_norm\.weight' has type i32, expected F32"):
        load(bad)


@pytest.fixture(scope="module")
def lm_and_adapter(smollm_path, tmp_path_factory):
    lm = load(smollm_path)
    return lm, make_adapter(lm, tmp_path_factory.mktemp("adapter") / "a.gguf", 2)


def test_adapter_with_f16_norm_is_rejected(tmp_path, lm_and_adapter):
    lm, adapter = lm_and_adapter
    bad = copy_gguf(adapter, tmp_path / "f16norm.gguf", retype={"adapter.output_norm.weight": T.F16})
    with pytest.raises(EngineError, match=r"f16norm\.gguf.*'adapter\.output_norm\.weight' has type f16, expected F32"):
        lm.load_adapter(bad)
    assert lm.generate("Hi", max_tokens=2).token_ids  # still usable


def test_adapter_with_f16_projections_loads(tmp_path, lm_and_adapter):
    lm, adapter = lm_and_adapter
    names = ["adapter.attn_q.weight", "adapter.attn_k.weight", "adapter.attn_v.weight", "adapter.attn_output.weight"]
    f32 = copy_gguf(adapter, tmp_path / "f32.gguf", retype={n: T.F32 for n in names})
    f16 = copy_gguf(adapter, tmp_path / "f16.gguf", retype={n: T.F16 for n in names})
    for path in (f32, f16):
        lm.load_adapter(path)
        assert lm.generate("Hi", max_tokens=4).draft.speculative is True


def with_string_byte(data: bytes, key: str, index: int, byte: int) -> bytes:
    """data with byte `index` of the string value of metadata `key` replaced."""
    at = data.index(key.encode()) + len(key) + 4 + 8  # past the key, the u32 value type, the u64 length
    out = bytearray(data)
    out[at + index] = byte
    return bytes(out)


def test_metadata_that_is_not_utf8(tmp_path, smollm_path):
    # the error quotes the bad architecture name: it must arrive as an EngineError, not as a
    # UnicodeDecodeError raised while building the message
    bad = tmp_path / "arch.gguf"
    bad.write_bytes(with_string_byte(smollm_path.read_bytes(), "general.architecture", 2, 0xFF))
    with pytest.raises(EngineError, match="arch\\.gguf.*unsupported architecture 'll\ufffdma'"):
        load(bad)
    named = tmp_path / "name.gguf"
    named.write_bytes(with_string_byte(smollm_path.read_bytes(), "general.name", 0, 0xFF))
    lm = load(named)
    assert lm.info()["name"].startswith("\ufffd")
    assert lm.generate("Hi", max_tokens=2).token_ids

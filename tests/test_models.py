"""Where model files come from (kangaroo_edge/models.py): the Qwen2.5-Coder test model is assembled
from six PyPI parts into a cache, and a cached copy that is not what the parts make is replaced,
not reused."""

from __future__ import annotations

import os

from kangaroo_edge.models import QWEN_CODER_FILE, QWEN_CODER_SHA256, _sha256, qwen_coder_path


def test_a_damaged_assembled_model_is_assembled_again(tmp_path):
    path = qwen_coder_path(cache_dir=tmp_path)
    assert path == tmp_path / "models" / QWEN_CODER_FILE
    # one byte changed in the middle (a bad disk, a tampered cache): same size, other content
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    assert _sha256(path) != QWEN_CODER_SHA256
    again = qwen_coder_path(cache_dir=tmp_path)
    assert again == path and _sha256(again) == QWEN_CODER_SHA256

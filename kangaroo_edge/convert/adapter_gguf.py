"""Kangaroo adapter GGUF: write, read and validate (docs/formats.md, "Kangaroo adapter GGUF").

Tensors are passed as numpy arrays in torch layout [out, in]; the gguf package writes them with
the reverse ggml order (ne0 = in). Norm weights and biases are always F32, the projections F16 or
F32. Only numpy and gguf are needed, except for reading a torch checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from .. import _native

ARCH: str = _native.ADAPTER_ARCH  # general.architecture of an adapter (owned by the engine)
PREFIX = "adapter."
DEFAULT_TAU: float = _native.DEFAULT_TAU      # the paper's confidence threshold
DEFAULT_GAMMA: int = _native.DEFAULT_GAMMA    # the paper's maximum drafts per cycle
MAX_GAMMA: int = _native.MAX_GAMMA            # the most the engine verifies per cycle
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output")
NORMS = ("attn_norm", "output_norm")
BIASES = ("attn_q", "attn_k", "attn_v")
QK_NORMS = ("attn_q_norm", "attn_k_norm")  # per-head, [head_dim]: when the base model has them
# base models an adapter can be made for: the engine's architectures
BASE_ARCHS: tuple[str, ...] = tuple(_native.supported_architectures())  # the engine owns the list


@dataclass(frozen=True)
class AdapterMeta:
    base_arch: str          # one of BASE_ARCHS
    fingerprint: str        # base model fingerprint (docs/formats.md)
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_freq_base: float
    exit_layer: int
    tau: float = DEFAULT_TAU
    gamma: int = DEFAULT_GAMMA
    name: str = "kangaroo adapter"
    # FR-Spec draft vocabulary: the token ids the draft head scores (None: the whole vocabulary)
    draft_vocab: tuple[int, ...] | None = None


DRAFT_VOCAB_KEY = "kangaroo.draft.vocab"  # optional int32 array

# metadata key -> (AdapterMeta field, value type)
KEYS = {
    "general.name": ("name", GGUFValueType.STRING),
    "kangaroo.base.architecture": ("base_arch", GGUFValueType.STRING),
    "kangaroo.base.fingerprint": ("fingerprint", GGUFValueType.STRING),
    "kangaroo.embedding_length": ("n_embd", GGUFValueType.UINT32),
    "kangaroo.attention.head_count": ("n_head", GGUFValueType.UINT32),
    "kangaroo.attention.head_count_kv": ("n_head_kv", GGUFValueType.UINT32),
    "kangaroo.attention.key_length": ("head_dim", GGUFValueType.UINT32),
    "kangaroo.attention.layer_norm_rms_epsilon": ("rms_eps", GGUFValueType.FLOAT32),
    "kangaroo.rope.freq_base": ("rope_freq_base", GGUFValueType.FLOAT32),
    "kangaroo.exit_layer": ("exit_layer", GGUFValueType.UINT32),
    "kangaroo.draft.tau": ("tau", GGUFValueType.FLOAT32),
    "kangaroo.draft.gamma": ("gamma", GGUFValueType.UINT32),
}


def expected_shapes(meta: AdapterMeta) -> dict[str, tuple[int, ...]]:
    """Required tensor name -> numpy/torch shape [out, in]."""
    q_dim, kv_dim = meta.n_head * meta.head_dim, meta.n_head_kv * meta.head_dim
    return {
        f"{PREFIX}attn_norm.weight": (meta.n_embd,),
        f"{PREFIX}attn_q.weight": (q_dim, meta.n_embd),
        f"{PREFIX}attn_k.weight": (kv_dim, meta.n_embd),
        f"{PREFIX}attn_v.weight": (kv_dim, meta.n_embd),
        f"{PREFIX}attn_output.weight": (meta.n_embd, q_dim),
        f"{PREFIX}output_norm.weight": (meta.n_embd,),
    }


def bias_shapes(meta: AdapterMeta) -> dict[str, tuple[int, ...]]:
    q_dim, kv_dim = meta.n_head * meta.head_dim, meta.n_head_kv * meta.head_dim
    return {f"{PREFIX}attn_q.bias": (q_dim,), f"{PREFIX}attn_k.bias": (kv_dim,), f"{PREFIX}attn_v.bias": (kv_dim,)}


def qk_norm_shapes(meta: AdapterMeta) -> dict[str, tuple[int, ...]]:
    return {f"{PREFIX}{n}.weight": (meta.head_dim,) for n in QK_NORMS}


def validate_tensors(path, tensors: dict[str, np.ndarray], meta: AdapterMeta) -> None:
    """ValueError naming the file for a missing, unexpected or misshapen tensor."""
    required = expected_shapes(meta)
    for name in required:
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor '{name}'")
    optional = {}
    for group, what in ((bias_shapes(meta), "q/k/v biases"), (qk_norm_shapes(meta), "q/k norms")):
        present = [n for n in group if n in tensors]
        if present and len(present) != len(group):
            raise ValueError(f"{path}: {what} must come together, found only {present}")
        optional.update(group)
    for name, arr in tensors.items():
        shape = required.get(name) or optional.get(name)
        if shape is None:
            raise ValueError(f"{path}: unexpected tensor '{name}'")
        if tuple(arr.shape) != shape:
            raise ValueError(f"{path}: tensor '{name}' has shape {tuple(arr.shape)}, expected {shape}")


def write_adapter_gguf(path: str | Path, tensors: dict[str, np.ndarray], meta: AdapterMeta,
                       dtype: str = "f16") -> None:
    """tensors: GGUF names (`adapter.attn_q.weight`, ...) -> arrays in torch layout [out, in]."""
    if dtype not in ("f16", "f32"):
        raise ValueError(f"dtype must be 'f16' or 'f32', got {dtype!r}")
    if meta.base_arch not in BASE_ARCHS:
        raise ValueError(f"base architecture must be one of {', '.join(BASE_ARCHS)}, got {meta.base_arch!r}")
    if not 1 <= meta.gamma <= MAX_GAMMA:
        raise ValueError(f"gamma must be in [1, {MAX_GAMMA}] (the engine's limit), got {meta.gamma}")
    if not 0.0 <= meta.tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {meta.tau}")
    validate_tensors(path, tensors, meta)
    writer = GGUFWriter(str(path), ARCH)  # writes general.architecture
    for key, (field, vtype) in KEYS.items():
        value = getattr(meta, field)
        {GGUFValueType.STRING: writer.add_string, GGUFValueType.UINT32: writer.add_uint32,
         GGUFValueType.FLOAT32: writer.add_float32}[vtype](key, value)
    if meta.draft_vocab is not None:
        vocab = [int(t) for t in meta.draft_vocab]
        if not vocab or min(vocab) < 0 or len(set(vocab)) != len(vocab):
            raise ValueError("draft_vocab must be a non-empty list of distinct token ids")
        writer.add_key_value(DRAFT_VOCAB_KEY, vocab, GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
    proj_dtype = np.float16 if dtype == "f16" else np.float32
    for name, arr in tensors.items():
        is_projection = name.endswith(".weight") and name[len(PREFIX):-len(".weight")] in PROJECTIONS
        writer.add_tensor(name, np.ascontiguousarray(arr, dtype=proj_dtype if is_projection else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_adapter_gguf(path: str | Path) -> tuple[AdapterMeta, dict[str, np.ndarray]]:
    """Reads and validates an adapter GGUF; tensors come back in torch layout [out, in], as stored
    (F16 or F32), copied out of the file."""
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch != ARCH:
        raise ValueError(f"{path}: general.architecture is {arch!r}, expected '{ARCH}' (not a Kangaroo adapter)")
    values = {}
    for key, (field, vtype) in KEYS.items():
        f = reader.fields.get(key)
        if f is None:
            raise ValueError(f"{path}: missing metadata key '{key}'")
        if f.types != [vtype]:
            raise ValueError(f"{path}: metadata key '{key}' has type {f.types}, expected {vtype.name}")
        values[field] = f.contents()
    vocab = reader.fields.get(DRAFT_VOCAB_KEY)
    if vocab is not None:
        if vocab.types != [GGUFValueType.ARRAY, GGUFValueType.INT32]:
            raise ValueError(f"{path}: metadata key '{DRAFT_VOCAB_KEY}' has type {vocab.types}, expected an INT32 array")
        values["draft_vocab"] = tuple(int(t) for t in vocab.contents())
    meta = AdapterMeta(**values)
    if meta.base_arch not in BASE_ARCHS:
        raise ValueError(f"{path}: kangaroo.base.architecture {meta.base_arch!r} is not one of {', '.join(BASE_ARCHS)}")
    tensors = {}
    for t in reader.tensors:
        if t.data.dtype not in (np.float16, np.float32):
            raise ValueError(f"{path}: tensor '{t.name}' has type {t.tensor_type.name}, expected F32 or F16")
        tensors[t.name] = np.array(t.data)  # numpy shape [ne1, ne0] = torch [out, in]
    validate_tensors(path, tensors, meta)
    return meta, tensors


# ---------------------------------------------------------------- from the torch side

def adapter_state_to_tensors(state_dict) -> dict[str, np.ndarray]:
    """A KangarooAdapter state dict (torch tensors or arrays) -> GGUF-named float32 arrays.
    The module's parameter names are the GGUF names without the `adapter.` prefix."""
    names = [f"{n}.weight" for n in NORMS + QK_NORMS + PROJECTIONS] + [f"{n}.bias" for n in BIASES]
    out = {}
    for name in names:
        if name in state_dict:
            value = state_dict[name]
            if hasattr(value, "detach"):
                value = value.detach().float().cpu().numpy()
            out[PREFIX + name] = np.asarray(value, dtype=np.float32)
    return out


def tensors_to_adapter_state(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse: GGUF-named arrays -> state-dict names (load with torch.from_numpy)."""
    return {name[len(PREFIX):]: np.asarray(arr, dtype=np.float32) for name, arr in tensors.items()}

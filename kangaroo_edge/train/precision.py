"""The precision of the training side's matrix products (the fit's step, the torch teacher):
bfloat16 where the device multiplies it natively, float32 elsewhere.

torch is imported inside the functions: the CLI reads PRECISIONS without pulling it in.
"""

from __future__ import annotations

PRECISIONS = ("float32", "bfloat16")


def default_precision(device) -> str:
    """bfloat16 on a GPU with bf16 and on a CPU with AMX or AVX-512 BF16 (oneDNN's bf16 products:
    the fit's step 1.4-1.5x faster, the teacher's forward 3x, on a Xeon with AMX); float32 elsewhere
    (an AVX2-only CPU only emulates bf16)."""
    import torch

    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return "bfloat16" if device.type == "cpu" and native else "float32"


def resolve_precision(precision: str | None, device) -> str:
    """precision as given (checked), or the device's default when None."""
    if precision is None:
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def torch_dtype(precision: str):
    import torch

    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def autocast(device, precision: str):
    """A forward pass's products in `precision` (torch autocast; reductions and norms stay float32)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

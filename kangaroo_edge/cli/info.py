"""`kangaroo-edge info`: what a model (and adapter) file is, and how it would run here.

The model is loaded (small models load in well under a second) so that the backend and threads
shown are the ones a run would use; the file type and tensor types come from the GGUF header.
The adapter is read from its GGUF header and checked against the model's fingerprint. The
architectures the engine runs are listed too (a model of another one is refused at load).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from .common import UserError, add_model_args, load_model


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_model_args(p)


def _field(reader: Any, key: str) -> Any:
    """A scalar or string metadata value of a GGUF, or None."""
    f = reader.fields.get(key)
    if f is None or not f.data:
        return None
    part = f.parts[f.data[0]]
    import gguf

    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    value = part.tolist()[0]
    return round(value, 6) if isinstance(value, float) else value


def _read_gguf(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as e:
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None


def model_file_info(path: Path) -> dict[str, Any]:
    """File type (quantization), tensor type counts and parameter count from the GGUF header."""
    import gguf

    r = _read_gguf(path)
    ftype = _field(r, "general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(ftype).name.replace("MOSTLY_", "") if ftype is not None else None
    except ValueError:
        ftype_name = f"unknown ({ftype})"
    types = Counter(t.tensor_type.name for t in r.tensors)
    return {"file_type": ftype_name, "tensor_types": dict(types.most_common()),
            "n_params": int(sum(int(t.n_elements) for t in r.tensors)), "file_bytes": path.stat().st_size}


def adapter_info(path: Path, model_fingerprint: str) -> dict[str, Any]:
    """The adapter's header, read and checked by the adapter format's one reader."""
    from ..convert.adapter_gguf import read_adapter_gguf

    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    try:
        meta, tensors = read_adapter_gguf(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    return {
        "path": str(path), "name": meta.name, "exit_layer": meta.exit_layer, "tau": round(meta.tau, 6),
        "gamma": meta.gamma, "base_architecture": meta.base_arch,
        "base_fingerprint": meta.fingerprint, "matches_model": meta.fingerprint == model_fingerprint,
        "draft_vocab_size": len(meta.draft_vocab) if meta.draft_vocab is not None else None,
        "n_params": int(sum(t.size for t in tensors.values())), "file_bytes": path.stat().st_size,
    }


def matmul_paths(engine: Any) -> dict[str, str]:
    """Weight type -> how its products run in one-row steps and verification batches (up to 16
    rows): our kernels (and which ISA path) or ggml's mul_mat (and why). Prefill takes ggml's."""
    from kangaroo_edge import _native

    return dict(_native.kernels.matmul_paths(engine))  # a read-only view of the loaded weights


def _native_kernels() -> Any:
    from kangaroo_edge import _native

    return _native.kernels


def gather(args: argparse.Namespace) -> dict[str, Any]:
    adapter_path: Optional[str] = args.adapter
    args.adapter = None  # read below from its header: a mismatch is reported, not an error
    lm = load_model(args)
    info = lm.info()
    info.update(model_file_info(Path(info["model_path"])))
    info["load_seconds"] = round(lm.load_seconds, 4)
    info["matmul_paths"] = matmul_paths(lm.engine)
    if adapter_path is None and lm.adapter_path is not None:  # the adapter shipped for the default model
        adapter_path = str(lm.adapter_path)
    info["adapter"] = adapter_info(Path(adapter_path), info["fingerprint"]) if adapter_path else None
    if info["adapter"]:
        info["adapter"]["share_of_model_params"] = info["adapter"]["n_params"] / max(info["n_params"], 1)
    info.pop("adapter_path", None)
    info["supported_architectures"] = supported_architectures()
    return info


def supported_architectures() -> list[str]:
    """GGUF `general.architecture` names the engine runs."""
    from .. import _native

    return list(_native.supported_architectures())


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def format_table(info: dict[str, Any]) -> str:
    rows = [
        ("model", info["model_path"]),
        ("name", info["name"]),
        ("architecture", f"{info['arch']}, {info['n_layer']} layers, n_embd {info['n_embd']}, "
                         f"heads {info['n_head']} (kv {info['n_head_kv']}), vocab {info['n_vocab']}"),
        ("quantization", f"{info['file_type']} (tensors: "
                         + ", ".join(f"{k} {v}" for k, v in info["tensor_types"].items()) + ")"),
        ("parameters", f"{info['n_params'] / 1e6:.1f} M"),
        ("size", f"file {_mib(info['file_bytes'])}, weights {_mib(info['weight_bytes'])}, "
                 f"KV cache {_mib(info['kv_bytes'])} at n_ctx {info['n_ctx']}"),
        ("n_ctx_train", str(info["n_ctx_train"])),
        ("fingerprint", info["fingerprint"]),
        ("backend", info["backend"] if "thread" in info["backend"] else f"{info['backend']}, {info['n_threads']} threads"),
        ("supported", "architectures " + ", ".join(info["supported_architectures"])),
        ("matmuls", "; ".join(f"{t}: {p}" for t, p in info["matmul_paths"].items())
                    + f" (one-row steps and verification batches of up to {_native_kernels().MAX_ROWS} rows; "
                    + "prefill: ggml mul_mat)"),
    ]
    a = info.get("adapter")
    if a is None:
        rows.append(("adapter", "none (plain decoding)"))
    else:
        match = "matches the model" if a["matches_model"] else f"DOES NOT match the model ({a['base_fingerprint']})"
        rows += [("adapter", f"{a['path']} ({_mib(a['file_bytes'])}, {a['n_params'] / 1e6:.2f} M parameters, "
                             f"{100 * a['share_of_model_params']:.2f}% of the model)"),
                 ("exit layer", f"{a['exit_layer']} of {info['n_layer']}; draft tau {a['tau']}, gamma {a['gamma']}"),
                 ("adapter base", f"{a['base_architecture']}, fingerprint {match}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(args: argparse.Namespace) -> int:
    info = gather(args)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0

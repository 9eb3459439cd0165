"""Writes edited copies of real GGUF files (a key changed, a tensor dropped, a tensor retyped)
for error tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import gguf
import numpy as np


def copy_gguf(src: Path, dst: Path, *, drop_tensors: Iterable[str] = (), set_str: Optional[dict[str, str]] = None,
              drop_keys: Iterable[str] = (), retype: Optional[dict[str, gguf.GGMLQuantizationType]] = None,
              set_values: Optional[dict[str, Any]] = None) -> Path:
    """retype: tensor name -> new type. Between F32 and F16 the values are converted; any other
    retype relabels the bytes as they are (the new type must give the same byte size).
    set_values: key -> new value of an existing key, written with the key's own type (an array
    keeps its element type)."""
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    set_str = dict(set_str or {})
    writer = gguf.GGUFWriter(str(dst), set_str.get("general.architecture", arch))
    drop_keys = set(drop_keys) | {"general.architecture"}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in drop_keys:
            continue
        if name in set_str:
            writer.add_string(name, set_str.pop(name))
            continue
        _add_field(writer, name, field, (set_values or {}).get(name, _KEEP))
    for name, value in set_str.items():
        if name != "general.architecture":
            writer.add_string(name, value)
    drop = set(drop_tensors)
    retype = dict(retype or {})
    floats = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
    for t in reader.tensors:
        if t.name in drop:
            continue
        new = retype.get(t.name, t.tensor_type)
        if new != t.tensor_type and t.tensor_type in floats and new in floats:
            data = np.asarray(t.data, dtype=floats[new])
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=new)
        else:
            writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=new)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


_KEEP = object()


def _add_field(writer: gguf.GGUFWriter, name: str, field: Any, value: Any = _KEEP) -> None:
    vtype = field.types[0]
    if value is _KEEP:
        value = field.contents()
    if vtype == gguf.GGUFValueType.ARRAY:
        if len(field.types) > 1 and field.types[1] != gguf.GGUFValueType.STRING:
            writer.add_key_value(name, list(value), vtype, sub_type=field.types[1])
            return
        writer.add_array(name, value)
    else:
        writer.add_key_value(name, value, vtype)

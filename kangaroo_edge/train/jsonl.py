"""JSONL and JSON files the data stages share: append one line at a time (a crash loses at most
the line being written), read back ignoring a last line cut short, replace whole files atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete lines of a JSONL file ([] if it does not exist). A last line cut short by a
    crash is ignored (append_jsonl removes it before appending)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(ln.strip() for ln in lines[i + 1:]):
                raise ValueError(f"{path}:{i + 1}: corrupt line") from None
            logger.warning("%s: ignoring an incomplete last line", path)
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Appends one line and flushes it, so a crash loses at most the line being written. A last
    line cut short by an earlier crash is removed first."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        with open(path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)

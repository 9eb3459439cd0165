"""A user's prompt file: JSONL (prompt / instruction (+ input) / turns / messages / conversations)
or plain text, one prompt per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from .cleaning import Deduplicator


def _prompt_of(row: dict, where: str) -> str:
    for key in ("prompt", "instruction"):
        if isinstance(row.get(key), str):
            text = row[key]
            if key == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
                text = f"{text}\n\n{row['input']}"  # Alpaca-style rows
            return text
    turns = row.get("turns")
    if isinstance(turns, list) and turns:
        first = turns[0]
        return first if isinstance(first, str) else first.get("content", "")
    messages = row.get("messages") or row.get("conversations")
    if isinstance(messages, list):
        for m in messages:
            role = m.get("role", m.get("from"))
            if role in ("user", "human"):
                return m.get("content", m.get("value", ""))
    raise ValueError(f"{where}: no 'prompt', 'instruction', 'turns' or 'messages' field")


def read_user_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSONL file (one object per line) or a text file (one prompt per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    is_jsonl = path.suffix in (".jsonl", ".json") or first.lstrip().startswith("{")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object")
            out.append(_prompt_of(row, f"{path}:{i}"))
        else:
            out.append(line.replace("\\n", "\n"))
    return out


def select_user_prompts(texts: Iterable[str], n_prompts: Optional[int],
                        exclude: Iterable[str] = ()) -> tuple[list[str], int, int]:
    """Strips, drops empty lines, removes exact and near duplicates and texts near an `exclude`d
    one (counted as rejected), keeps the first n_prompts. A user's long prompt is kept whole: the
    responses stage skips what does not fit the context. Returns (prompts, n_duplicates, n_rejected)."""
    dedup, kept, rejected = Deduplicator(), [], 0
    dedup.exclude(exclude)
    for text in texts:
        text = text.strip()
        if len(text) < 2:
            rejected += 1
            continue
        if dedup.add(text):
            kept.append(text)
            if n_prompts is not None and len(kept) >= n_prompts:
                break
    return kept, dedup.n_duplicates, rejected + dedup.n_excluded


def read_exclusions(path: str | Path) -> list[str]:
    """Every question text of a file never to train on: each turn of a Spec-Bench-style JSONL row
    ("turns"), or whatever read_user_prompts reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exclusion file not found: {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.lstrip().startswith("{") else None
        if isinstance(row, dict) and isinstance(row.get("turns"), list):
            out += [t for t in row["turns"] if isinstance(t, str)]
    return out or read_user_prompts(path)

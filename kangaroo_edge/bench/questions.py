"""Questions in Spec-Bench's JSONL schema (question_id, category, turns), and the one order in
which a run takes "the first n" of them: the benchmark's and the tests' alike.

The benchmark's default file is Spec-Bench's dev set beside a development checkout
(../shared/specbench/dev.jsonl); the tests use the prompts the project ships in tests/data/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

SPECBENCH_ENV = "KANGAROO_EDGE_SPECBENCH"  # another Spec-Bench file, or a missing one for none


def default_questions_path() -> Optional[Path]:
    """The benchmark's default questions: $KANGAROO_EDGE_SPECBENCH, else ../shared/specbench/dev.jsonl
    next to the repository (a development checkout); None if that file is not there."""
    repo = Path(__file__).resolve().parents[2]
    p = Path(os.environ.get(SPECBENCH_ENV, repo.parent / "shared" / "specbench" / "dev.jsonl"))
    return p if p.is_file() else None


def load_questions(path: Path, categories: Optional[list[str]] = None, limit: Optional[int] = None) -> list[dict]:
    """Questions of a Spec-Bench-style JSONL, optionally of some categories. With a limit they
    are taken round-robin over the categories (in the order they first appear in the file, in
    file order within each), so that a small run still covers every category."""
    rows = _read_rows(Path(path))
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    if categories:
        unknown = [c for c in categories if c not in by_cat]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; {path} has: {', '.join(by_cat)}")
        by_cat = {c: by_cat[c] for c in by_cat if c in categories}
    if limit is None:
        return [r for r in rows if r["category"] in by_cat]
    out, i = [], 0
    while len(out) < limit and any(i < len(v) for v in by_cat.values()):
        for cat in by_cat:
            if i < len(by_cat[cat]) and len(out) < limit:
                out.append(by_cat[cat][i])
        i += 1
    return out


def _read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    for r in rows:
        if not isinstance(r, dict) or "category" not in r or not r.get("turns"):
            raise ValueError(f"{path}: every line needs 'category' and a non-empty 'turns' list")
    return rows

"""The draft vocabulary (FR-Spec, arXiv 2502.14856): the draft head scores only the tokens the
model most often writes, so a draft step's LM-head matmul shrinks (SmolLM2: 49152 -> 8192 rows,
the head being most of an exit-layer-2 draft step). Verification keeps the full head, so the
output never changes; only drafts of rare tokens are lost."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

DEFAULT_SIZE = 8192


def frequent_tokens(counts: Counter, size: int, always: Iterable[int] = ()) -> tuple[list[int], float]:
    """The `size` most frequent tokens (ties: lower id first), with `always` (end-of-turn tokens,
    which answers end with but responses.jsonl does not store) included. Returns the ids and
    the fraction of counted tokens they cover."""
    if size < 1:
        raise ValueError(f"draft vocabulary size must be >= 1, got {size}")
    always = list(dict.fromkeys(int(t) for t in always))
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    chosen = always + [t for t in ranked if t not in set(always)][: max(size - len(always), 0)]
    total = sum(counts.values())
    coverage = sum(counts[t] for t in chosen) / total if total else 0.0
    return chosen, coverage

"""Cleaning and deduplication of prompts: strip the model's wrapping, bound the length, drop exact
and near duplicates (word 3-gram Jaccard), and keep out texts that must never be trained on (the
Spec-Bench questions)."""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Optional

MIN_CHARS, MAX_CHARS = 12, 6000  # cleaned prompt length bounds (long-context prompts reach ~4000)
MIN_WORDS = 3
NEAR_DUP_JACCARD = 0.6           # word 3-gram Jaccard at or above which two prompts are near-duplicates
SHINGLE = 3


_LABEL = re.compile(r"^\s*(?:\*\*)?(?:question|request|instruction|prompt|task|problem|user|title|"
                    r"query|text|paragraph|passage)\s*(?:\d+)?\s*[:\-]\s*(?:\*\*)?\s*", re.I)
_PREAMBLE = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|absolutely)\b[^\n:]*:\s*", re.I)
_QUOTES = ("\"\"", "''", "\u201c\u201d", "\u2018\u2019", "``", "**")
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>")
_SENTENCE_END = re.compile(r"[.!?)\]\"\u201d](?=\s|$)")


def clean_text(text: str, first_paragraph: bool, truncated: bool = False) -> Optional[str]:
    """Strips the model's wrapping ("Sure, here is a question:", labels, quotes); keeps the first
    paragraph of a request; cuts a truncated text back to its last full sentence. None if what
    is left is outside the length bounds."""
    text = _SPECIAL.sub("", unicodedata.normalize("NFKC", text)).strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    text = _LABEL.sub("", text, count=1).strip()
    if first_paragraph:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = paragraphs[0] if paragraphs else ""
        truncated = truncated and len(paragraphs) == 1
    if truncated:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        text = text[:ends[-1]] if ends else ""
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            text = text[len(left):-len(right)].strip()
    text = re.sub(r"[ \t]+", " ", text).strip()
    if not MIN_CHARS <= len(text) <= MAX_CHARS or len(text.split()) < MIN_WORDS:
        return None
    return text


def normalize(text: str) -> str:
    """Lower case, letters and digits only, single spaces: the key for exact duplicates."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def shingles(norm: str, n: int = SHINGLE) -> frozenset:
    words = norm.split()
    if len(words) <= n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


class Deduplicator:
    """Exact (normalized text) and near-duplicate (word n-gram Jaccard) filter. An inverted index
    from n-gram to prompts limits the Jaccard comparisons to prompts sharing an n-gram."""

    def __init__(self, threshold: float = NEAR_DUP_JACCARD):
        self.threshold = threshold
        self._exact: dict[str, bool] = {}      # normalized text -> excluded
        self._sets: list[frozenset] = []
        self._excluded: list[bool] = []
        self._index: dict[str, list[int]] = {}
        self.n_exact = 0
        self.n_near = 0
        self.n_excluded = 0

    def exclude(self, texts: Iterable[str]) -> None:
        """Remembers texts that no prompt may duplicate (exactly or nearly), without keeping them:
        a prompt that matches one is refused and counted in `n_excluded`."""
        for text in texts:
            self._remember(normalize(text), shingles(normalize(text)), excluded=True)

    def add(self, text: str) -> bool:
        """True (and remembered) if `text` is new; False for a duplicate or an excluded text."""
        norm = normalize(text)
        sh = shingles(norm)
        match = self._match(norm, sh)
        if match is not None:
            kind, excluded = match
            if excluded:
                self.n_excluded += 1
            elif kind == "exact":
                self.n_exact += 1
            else:
                self.n_near += 1
            return False
        self._remember(norm, sh, excluded=False)
        return True

    def _match(self, norm: str, sh: frozenset) -> Optional[tuple[str, bool]]:
        """("exact" | "near", whether the match is an excluded text), or None."""
        if norm in self._exact:
            return "exact", self._exact[norm]
        seen: set[int] = set()
        for g in sh:
            for j in self._index.get(g, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self._sets[j]
                if len(sh & other) / len(sh | other) >= self.threshold:
                    return "near", self._excluded[j]
        return None

    def _remember(self, norm: str, sh: frozenset, excluded: bool) -> None:
        self._exact[norm] = excluded
        k = len(self._sets)
        self._sets.append(sh)
        self._excluded.append(excluded)
        for g in sh:
            self._index.setdefault(g, []).append(k)

    @property
    def n_duplicates(self) -> int:
        return self.n_exact + self.n_near

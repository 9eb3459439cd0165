"""Text in and out: completion-style prompts, incremental UTF-8 decoding of tokens and stop strings."""

from __future__ import annotations

import codecs
from typing import Callable, Optional, Sequence, Union


def completion_prompt(text: str) -> str:
    """A question as raw text for a model to continue (a model without a chat template, such as
    the pretrained Gemma 3 270M): the text, then a blank line where the answer starts."""
    return text.strip() + "\n\n"


class TextAssembler:
    """Token bytes -> text, cut at the first stop string; text that might be the start of a
    stop string is held back until it is known not to be one."""

    def __init__(self, token_bytes: Callable[[int], bytes], stops: list[str]):
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._held = ""  # decoded, not yet emitted

    def add(self, token: int) -> tuple[str, bool]:
        """The text this token releases, and whether a stop string ended the text."""
        self._held += self._decoder.decode(self._token_bytes(token))
        for s in self._stops:
            i = self._held.find(s)
            if i >= 0:
                out, self._held = self._held[:i], ""
                return out, True
        keep = max((_overlap(self._held, s) for s in self._stops), default=0)
        out = self._held[:len(self._held) - keep]
        self._held = self._held[len(out):]
        return out, False

    def flush(self) -> str:
        out = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def stop_list(stop: Optional[Union[str, Sequence[str]]]) -> list[str]:
    """`stop` as OpenAI takes it (None, a string or a list of strings), checked."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
    return stops

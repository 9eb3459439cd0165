"""A prompt cache of several conversations in RAM (llama-server's `--cache-ram`,
llama-cpp-python's `LlamaRAMCache`).

The engine keeps one sequence: a request whose prompt does not continue it truncates it, so a
chat front-end that sends a title or tag request between two turns of a conversation makes the
next turn prefill the whole conversation again. With a cache, the sequence a new prompt is about
to discard is saved first (its KV caches, the Kangaroo adapter's included), and a saved one that
shares a longer prefix with the new prompt is loaded back: the turn then evaluates only its new
tokens. Loading copies the cached bytes back as they were, so a continued conversation computes
exactly what it would have computed had it never been left.

States are kept least recently used first and evicted past `capacity_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

from . import _native

DEFAULT_CACHE_RAM_MIB = 8192  # llama-server's --cache-ram default


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """Saved sequence states by their tokens, least recently used first."""

    def __init__(self, capacity_bytes: int):
        if not isinstance(capacity_bytes, int) or isinstance(capacity_bytes, bool) or capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be a positive integer, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], _native.SequenceState] = OrderedDict()
        self.nbytes = 0
        self.hits = 0  # states loaded back

    def __len__(self) -> int:
        return len(self._states)

    def store(self, state: _native.SequenceState) -> None:
        """Keeps a state (replacing one with the same tokens); evicts the oldest past capacity.
        A state larger than the whole capacity is not kept."""
        key = tuple(state.tokens)
        old = self._states.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        if state.nbytes > self.capacity_bytes:
            return
        self._states[key] = state
        self.nbytes += state.nbytes
        while self.nbytes > self.capacity_bytes:
            _, evicted = self._states.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def longest_match(self, prompt_ids: Sequence[int]) -> tuple[Optional[tuple[int, ...]], int]:
        """The saved state sharing the longest prefix with the prompt, and that length."""
        best, best_n = None, 0
        for key in self._states:
            n = common_prefix(key, prompt_ids)
            if n > best_n:
                best, best_n = key, n
        return best, best_n

    def prepare(self, engine: _native.Engine, prompt_ids: Sequence[int]) -> None:
        """Before a generation: save what the prompt would discard of the engine's sequence, and
        load the saved state that shares the longest prefix with it when that beats the sequence."""
        current = engine.tokens
        keep = common_prefix(current, prompt_ids)
        key, n = self.longest_match(prompt_ids)
        best = self._states[key] if key is not None and n > keep else None
        if keep < len(current):
            self.store(engine.save_state())  # may evict `best`: it lives on in the engine
        if best is not None:
            if key in self._states:
                self._states.move_to_end(key)
            engine.load_state(best)
            self.hits += 1

"""How a generation decodes (the draft options) and the step generator over the native decoder.

The native decoder (native/decoder.h) is the only decode loop: plain decoding is a decoder step
with drafting off, so plain and speculative generations share one prefill, one step and one
commit path, and the cached prefix means the same thing to both.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

from . import _native
from .types import SamplingParams

MAX_GAMMA: int = _native.MAX_GAMMA
DEFAULT_GAMMA: int = _native.DEFAULT_GAMMA
DEFAULT_TAU: float = _native.DEFAULT_TAU


@dataclass(frozen=True)
class DraftOptions:
    """How a generation drafts. tau None lets the speculation controller decide whether and how
    far to draft (gamma caps it); a float is the paper's fixed confidence threshold."""

    speculative: bool = True
    tau: Optional[float] = None
    gamma: int = DEFAULT_GAMMA
    lookup: bool = True  # also draft by prompt lookup
    speculative_fallback: Optional[str] = None  # why a generation that asked to speculate did not

    def __post_init__(self) -> None:
        if self.tau is not None and (not isinstance(self.tau, (int, float)) or isinstance(self.tau, bool)
                                     or not 0.0 <= self.tau <= 1.0):
            raise ValueError(f"tau must be a number in [0, 1], got {self.tau!r}")
        if not isinstance(self.gamma, int) or isinstance(self.gamma, bool) or not 1 <= self.gamma <= MAX_GAMMA:
            raise ValueError(f"gamma must be an integer in [1, {MAX_GAMMA}], got {self.gamma!r}")

    def as_dict(self) -> dict[str, Any]:
        """As reported beside a generation's stats (the server's `timings`): tau "auto" for the controller."""
        return {**asdict(self), "tau": "auto" if self.tau is None else self.tau}

    def native(self) -> "_native.DraftParams":
        if not self.speculative:
            return _native.DraftParams(_native.DraftMode.OFF)
        if self.tau is None:
            return _native.DraftParams(_native.DraftMode.AUTO, gamma=self.gamma, lookup=self.lookup)
        return _native.DraftParams(_native.DraftMode.THRESHOLD, tau=float(self.tau), gamma=self.gamma,
                                   lookup=self.lookup)


def generation_seed(sampling: SamplingParams) -> int:
    """The sampler's seed: the one asked for, else a random one per generation."""
    return sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(8), "little")


def decode_steps(engine: "_native.Engine", prompt_ids: list[int], sampling: SamplingParams,
                 draft: DraftOptions, max_tokens: int, mask: Any = None) -> Iterator[list[int]]:
    """The output of one generation, a step at a time: the first token comes from the prompt's
    forward pass, then each native step (a plain step, or a cycle: draft, verify, accept, roll
    back) adds one or more tokens. The decoder decides when the generation ends
    (engine.finish_reason: an end-of-generation token, max_tokens (0: none), a full context);
    a step runs only when the next tokens are asked for, so a caller that stops early (a stop
    string, engine.stop()) never costs a wasted forward pass. mask: a constraint on every token
    (constraints.GrammarMask), or None."""
    engine.seed(generation_seed(sampling))
    yield engine.start(prompt_ids, sampling.native(), max_tokens, mask)
    params = draft.native()
    while engine.finish_reason is None:
        yield engine.step(params)

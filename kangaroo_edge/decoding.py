"""How a generation decodes (the draft options) and the step generator over the native decoder.

The native decoder (native/decoder.h) is the only decode loop: plain decoding is a decoder step
with drafting off, so plain and speculative generations share one prefill, one step and one
commit path, and the cached prefix means the same thing to both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        if self.tau is not None and (not isinstance(self.tau, (int, float)) or isinstance(self.tau, bool)
                                     or not 0.0 <= self.tau <= 1.0):
            raise ValueError(f"tau must be a number in [0, 1], got {self.tau!r}")
        if not isinstance(self.gamma, int) or isinstance(self.gamma, bool) or not 1 <= self.gamma <= MAX_GAMMA:
            raise ValueError(f"gamma must be an integer in [1, {MAX_GAMMA}], got {self.gamma!r}")

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


def native_sampling(sampling: SamplingParams) -> "_native.SamplingParams":
    return _native.SamplingParams(sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p,
                                  sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty,
                                  sampling.repeat_last_n)


def decode_steps(engine: "_native.Engine", prompt_ids: list[int], sampling: SamplingParams,
                 draft: DraftOptions, limit: int, mask: Any = None) -> Iterator[list[int]]:
    """The first token comes from the prompt's forward pass, then each native step (a plain
    step, or a cycle: draft, verify, accept, roll back) adds one or more tokens. A step runs only
    when the next token is asked for, so stopping never costs a wasted forward pass. mask: a
    constraint on every token (constraints.GrammarMask), or None."""
    engine.seed(generation_seed(sampling))
    yield [engine.start(prompt_ids, native_sampling(sampling), mask)]
    params = draft.native()
    produced = 1
    while produced < limit and engine.n_past < engine.n_ctx:
        out = engine.step(params, limit - produced)
        produced += len(out)
        yield out


def timing_stats(prompt_ids: list[int], n_cached: int, generated: list[int], t0: float, t_first: float,
                 t_end: float) -> dict:
    prompt_s = t_first - t0
    gen_s = max(t_end - t_first, 1e-9)
    return {
        "n_prompt_tokens": len(prompt_ids), "n_tokens": len(generated),
        # prompt tokens the KV cache held from the previous call, not evaluated again
        "n_cached_tokens": n_cached,
        "prompt_seconds": prompt_s, "generation_seconds": gen_s,
        "prompt_tokens_per_second": len(prompt_ids) / max(prompt_s, 1e-9),
        # tokens after the first: the first token comes out of the prompt's forward pass
        "tokens_per_second": max(len(generated) - 1, 0) / gen_s,
        "prompt_token_ids": list(prompt_ids),
    }


def speculation_stats(s: dict[str, Any], draft: DraftOptions) -> dict:
    """The decoder's counters for one generation (engine.stats()), for result.stats."""
    cycles = max(s["cycles"], 1)
    lookup = s["by_drafter"].get("lookup", {"cycles": 0, "drafted": 0, "accepted": 0})
    return {
        "tau": "auto" if draft.tau is None else draft.tau, "gamma": draft.gamma,
        # tokens the controller decoded without drafting (auto mode), and its speculative tries
        # while a drafter was switched off
        "plain_steps": s["plain_steps"], "probes": s["probes"],
        "cycles": s["cycles"], "drafted": s["drafted"],
        "accepted": s["accepted"],
        # cycles that also verified the row after the last draft (a full accept adds k + 1)
        "bonus_rows": s["bonus_rows"],
        # tokens each verification adds: the accepted drafts plus the model's own token
        "mean_accepted": s["cycle_tokens"] / cycles,
        "acceptance_rate": s["accepted"] / max(s["drafted"], 1),
        "accepted_hist": s["accepted_hist"], "draft_seconds": s["draft_seconds"],
        "verify_seconds": s["verify_seconds"],
        # cycles (counted above too) whose drafts came from prompt lookup rather than the adapter
        "lookup": draft.lookup, "lookup_cycles": lookup["cycles"],
        "lookup_drafted": lookup["drafted"], "lookup_accepted": lookup["accepted"],
    }

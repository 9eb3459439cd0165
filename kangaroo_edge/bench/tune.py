"""`bench --tune`: measure what speculation costs on this machine, every draft length included.

A run under the speculation controller (or a fixed tau) verifies only the draft lengths it
happens to choose, and a fixed tau never takes a plain step, so the cost model would be partly
extrapolated and could lack its yardstick. Tuning times plain steps and forced cycles of every
length 1..gamma on one prompt, through the same decoder the run used.
"""

from __future__ import annotations

from statistics import median
from typing import Any, Optional

# Generated tokens per measurement: enough cycles of each length for a median of several, few
# enough to keep tuning to seconds.
TUNE_TOKENS = 24


def measure_costs(lm: Any, prompt_ids: list[int], gamma: int) -> dict[str, Any]:
    """The controller's cost model after timing plain steps and forced k-draft cycles for
    k = 1..gamma (tau = 0 drafts exactly k per cycle, up to the token budget)."""
    lm.generate(prompt_ids, TUNE_TOKENS, speculative=False)
    # tau = 1 drafts one token a cycle and never adds the bonus row: one verified row
    lm.generate(prompt_ids, TUNE_TOKENS, tau=1.0, gamma=1, lookup=False)
    for k in range(1, gamma + 1):
        # tau = 0 drafts exactly k and adds the bonus row, so k + 1 rows; each cycle adds at most
        # k + 1 tokens: a budget of several such cycles
        lm.generate(prompt_ids, max(TUNE_TOKENS, 4 * (k + 1) + 1), tau=0.0, gamma=k, lookup=False)
    return lm.cost_model()


def llamacpp_step_seconds(per_question: list[dict], system: str) -> Optional[float]:
    """llama.cpp's plain decoding step from the same run: the median over questions of its
    generation time per token after the first."""
    steps = []
    for q in per_question:
        r = q["systems"].get(system)
        if r and r["n_tokens"] > 1 and r["generation_seconds"] > 0:
            steps.append(r["generation_seconds"] / (r["n_tokens"] - 1))
    return median(steps) if steps else None


def with_ratios(cm: dict[str, Any], llamacpp_step: Optional[float]) -> dict[str, Any]:
    """Adds each verification's cost against our plain step and llama.cpp's (None where the
    yardstick was not measured)."""
    plain = cm["plain_seconds"] if cm.get("plain_measured") else None
    cm = dict(cm, llamacpp_step_seconds=llamacpp_step)
    for d in cm["drafters"].values():
        d["verify_vs_plain"] = [v / plain if plain else None for v in d["verify_seconds"]]
        d["verify_vs_llamacpp"] = [v / llamacpp_step if llamacpp_step else None for v in d["verify_seconds"]]
    return cm

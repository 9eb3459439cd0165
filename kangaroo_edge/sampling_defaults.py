"""Sampling defaults of the interactive surfaces (`kangaroo-edge chat` and `serve`): llama.cpp's.

llama.cpp's `llama-cli` and `llama-server` sample with temperature 0.8, top-k 40, top-p 0.95 and
min-p 0.05, and people who move from them expect the same answers' character. Unfiltered sampling
(top-k 0, top-p 1) lets a small model wander into its long tail of unlikely tokens. The library
(`KangarooLM.generate`), `generate` and `bench` stay greedy by default: they are for reproducible
output and measurement.
"""

from __future__ import annotations

from .types import SamplingParams

LLAMA_CPP_SAMPLING = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)

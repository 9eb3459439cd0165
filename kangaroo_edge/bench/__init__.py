"""Spec-Bench-style benchmark: our decoding modes against llama.cpp on the same GGUF, in one process.

runner: the systems under test and the per-question loop; report: summaries, Markdown, chart.
"""

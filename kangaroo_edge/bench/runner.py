"""The systems of the benchmark and the loop that runs them side by side.

Every system decodes greedily from the same prompt token ids, with the same threads, in the same
process. A run reports prefill (prompt evaluation) and generation separately; generation speed is
(tokens - 1) / (time from the first token to the last), the first token coming out of the prefill,
the same convention for every system.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..llamacpp import LlamaCpp
from ..openai_shapes import timings
from ..text import completion_prompt
from . import tune
from .questions import default_questions_path, load_questions  # noqa: F401 (the CLI imports it from here)

LLAMACPP_PLAIN = "llamacpp_plain"
LLAMACPP_PLD = "llamacpp_pld"
OURS_PLAIN = "ours_plain"
OURS_KANGAROO = "ours_kangaroo"
SYSTEMS = (LLAMACPP_PLAIN, LLAMACPP_PLD, OURS_PLAIN, OURS_KANGAROO)
LABELS = {LLAMACPP_PLAIN: "llama.cpp plain", LLAMACPP_PLD: "llama.cpp prompt lookup",
          OURS_PLAIN: "ours plain", OURS_KANGAROO: "ours Kangaroo"}

DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_THREADS = 2  # explicit, the same on every side, for reproducible numbers
PLD_NUM_PRED_TOKENS = 10  # llama-cpp-python's defaults for LlamaPromptLookupDecoding
PLD_MAX_NGRAM = 2
WARMUP_TOKENS = 8
# Context beyond the longest prompt and the new tokens: llama-cpp-python's prompt-lookup decoding
# evaluates its draft tokens (up to PLD_NUM_PRED_TOKENS) past the last one it keeps.
CONTEXT_SLACK = 16


@dataclass
class Run:
    """One system on one prompt."""

    token_ids: list[int]
    prefill_seconds: float
    generation_seconds: float
    n_prompt_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)  # ours: its `timings`; llama.cpp: speculation counters

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        return max(self.n_tokens - 1, 0) / max(self.generation_seconds, 1e-9)

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.n_prompt_tokens / max(self.prefill_seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "tokens_per_second": self.tokens_per_second,
                "generation_seconds": self.generation_seconds, "prefill_seconds": self.prefill_seconds,
                "prefill_tokens_per_second": self.prefill_tokens_per_second, **self.extra,
                "token_ids": self.token_ids}


# ---- systems -----------------------------------------------------------------------------

class OursSystem:
    """Our engine through the public API (speculative=False: plain; True: Kangaroo)."""

    def __init__(self, lm: Any, speculative: bool, tau: Optional[float] = None, gamma: Optional[int] = None,
                 lookup: Optional[bool] = None):
        self.lm = lm
        self.speculative = speculative
        self.tau, self.gamma, self.lookup = tau, gamma, lookup  # tau None: the speculation controller

    def run(self, prompt_ids: list[int], max_new_tokens: int) -> Run:
        self.lm.reset()  # no prefix reuse across systems: every prefill is a full one
        r = self.lm.generate(prompt_ids, max_new_tokens, temperature=0.0, speculative=self.speculative,
                             tau=self.tau, gamma=self.gamma, lookup=self.lookup)
        # the generation's whole record under its own names (the server's `timings`): speculation
        # counters, draft options, fallback reason ..., whatever it grows into
        return Run(list(r.token_ids), r.stats.prompt_ms * 1e-3, r.stats.predicted_ms * 1e-3, len(prompt_ids),
                   timings(r.stats, r.draft))


class LlamaCppPlain:
    """llama.cpp, plain greedy decoding at the lowest level llama-cpp-python offers: eval + argmax
    of the last logits, no sampler chain."""

    def __init__(self, llama: LlamaCpp):
        self.llama = llama

    def run(self, prompt_ids: list[int], max_new_tokens: int) -> Run:
        llama, llm = self.llama, self.llama.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt_ids)
        tok = int(llama.last_logits().argmax())
        t_first = time.perf_counter()
        out: list[int] = []
        while not llama.is_eog(tok):
            out.append(tok)
            if len(out) >= max_new_tokens or llm.n_tokens >= llm.n_ctx():
                break
            llm.eval([tok])
            tok = int(llama.last_logits().argmax())
        t_end = time.perf_counter()
        return Run(out, t_first - t0, t_end - t_first, len(prompt_ids))


class _CountingPLD:
    """llama-cpp-python's LlamaPromptLookupDecoding, counting verification cycles and drafts."""

    def __new__(cls, *args: Any, **kwargs: Any):
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        class Counting(LlamaPromptLookupDecoding):
            cycles = 0
            drafted = 0

            def __call__(self, input_ids, /, **kw):
                draft = super().__call__(input_ids, **kw)
                self.cycles += 1
                self.drafted += len(draft)
                return draft

        return Counting(*args, **kwargs)


class LlamaCppPromptLookup:
    """llama-cpp-python's prompt-lookup decoding (its draft_model), greedy through Llama.generate."""

    def __init__(self, llama: LlamaCpp):
        self.llama = llama

    def run(self, prompt_ids: list[int], max_new_tokens: int) -> Run:
        llm, pld = self.llama.llm, self.llama.llm.draft_model
        llm.reset()
        pld.cycles = pld.drafted = 0
        out: list[int] = []
        t0 = time.perf_counter()
        t_first = None
        gen = llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        try:
            for tok in gen:
                if t_first is None:
                    t_first = time.perf_counter()
                if self.llama.is_eog(tok):
                    break
                out.append(tok)
                if len(out) >= max_new_tokens or llm.n_tokens >= llm.n_ctx():
                    break
        finally:
            gen.close()
        t_end = time.perf_counter()
        t_first = t_first or t_end
        # cycles counts draft proposals; each is followed by one batched evaluation
        extra = {"cycles": pld.cycles, "draft_n": pld.drafted,
                 "mean_accepted": len(out) / pld.cycles if pld.cycles else None}
        return Run(out, t_first - t0, t_end - t_first, len(prompt_ids), extra)


def _llama(model_path: str, n_ctx: int, threads: int, draft_model: Any = None) -> LlamaCpp:
    # logits_all=True with a draft model: llama-cpp-python 0.3.36 turns it on internally but sizes
    # its score buffer from the argument (n_batch rows), so prompts longer than n_batch would fail
    return LlamaCpp(model_path, n_ctx, threads, logits_all=draft_model is not None, draft_model=draft_model)


# ---- the benchmark -----------------------------------------------------------------------

@dataclass
class BenchConfig:
    questions: str
    model: Optional[str] = None
    adapter: Optional[str] = None
    threads: int = DEFAULT_THREADS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    limit: Optional[int] = None
    categories: Optional[list[str]] = None
    n_ctx: Optional[int] = None  # None: the longest prompt + max_new_tokens, rounded up
    device: str = "cpu"
    systems: tuple[str, ...] = SYSTEMS
    tune: bool = False            # after the run, time plain steps and cycles of every draft length
    tau: Optional[float] = None   # Kangaroo: None = the speculation controller, else a fixed threshold
    gamma: Optional[int] = None   # Kangaroo: most drafts per cycle (None: the adapter's)
    lookup: Optional[bool] = None  # Kangaroo: also draft by prompt lookup (None: with the controller only)
    # "chat": each question in the chat template (the model's, or chat_template's); "completion":
    # the question as raw text to continue, for models without a template (a pretrained Gemma 3)
    prompt_format: str = "chat"
    chat_template: Optional[str] = None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": cpu, "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    try:
        import llama_cpp

        from ..llamacpp import cpu_extra_buffer_types

        info["llama_cpp_python"] = llama_cpp.__version__
        # "AMX" here means the baseline ran without any of them (LlamaCpp): slower than it can be
        info["llama_cpp_cpu_buffer_types"] = list(cpu_extra_buffer_types())
    except ImportError:
        pass
    try:
        from .. import __version__, _native

        info["kangaroo_edge"] = __version__
        info["ggml"] = _native.ggml_version()
    except ImportError:
        pass
    return info


def render_prompt(lm, question: dict, prompt_format: str) -> str:
    """A question's first turn as the model sees it (see BenchConfig.prompt_format)."""
    text = question["turns"][0]
    if prompt_format == "completion":
        return completion_prompt(text)
    if prompt_format != "chat":
        raise ValueError(f"prompt_format must be 'chat' or 'completion', got {prompt_format!r}")
    return lm.apply_chat_template([{"role": "user", "content": text}])


def run_bench(cfg: BenchConfig, progress: Optional[Callable[[Iterable], Iterable]] = None) -> dict[str, Any]:
    """Runs every system on every question; returns the results document (see report.summarize)."""
    from ..llm import KangarooLM

    questions = load_questions(Path(cfg.questions), cfg.categories, cfg.limit)
    if not questions:
        raise ValueError(f"no questions selected from {cfg.questions}")

    # a first load only to render and tokenize the prompts; the context is then sized to them
    lm = KangarooLM(cfg.model, adapter_path=cfg.adapter, n_ctx=256, n_threads=cfg.threads, device=cfg.device,
                    chat_template=cfg.chat_template)
    prompts = [lm.tokenize(render_prompt(lm, q, cfg.prompt_format)) for q in questions]
    n_ctx = cfg.n_ctx or _round_up(max(map(len, prompts)) + cfg.max_new_tokens + CONTEXT_SLACK, 256)
    lm.close()
    t = time.perf_counter()
    lm = KangarooLM(cfg.model, adapter_path=cfg.adapter, n_ctx=n_ctx, n_threads=cfg.threads, device=cfg.device)
    load_seconds = {OURS_PLAIN: time.perf_counter() - t, OURS_KANGAROO: 0.0}
    model_path = str(lm.model_path)

    systems: dict[str, Any] = {}
    for name in cfg.systems:
        t = time.perf_counter()
        if name == LLAMACPP_PLAIN:
            systems[name] = LlamaCppPlain(_llama(model_path, n_ctx, cfg.threads))
        elif name == LLAMACPP_PLD:
            pld = _CountingPLD(max_ngram_size=PLD_MAX_NGRAM, num_pred_tokens=PLD_NUM_PRED_TOKENS)
            systems[name] = LlamaCppPromptLookup(_llama(model_path, n_ctx, cfg.threads, draft_model=pld))
        elif name == OURS_PLAIN:
            systems[name] = OursSystem(lm, speculative=False)
        elif name == OURS_KANGAROO:
            systems[name] = OursSystem(lm, speculative=True, tau=cfg.tau, gamma=cfg.gamma, lookup=cfg.lookup)
        else:
            raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
        load_seconds.setdefault(name, time.perf_counter() - t)

    for s in systems.values():  # first-call costs (graph allocation, weight repacking) off the clock
        s.run(prompts[0], WARMUP_TOKENS)

    names = list(systems)
    per_question = []
    load_before = machine_info().get("load_average")
    indices = range(len(questions))
    for i in (progress(indices) if progress else indices):
        q, ids = questions[i], prompts[i]
        order = names[i % len(names):] + names[:i % len(names)]  # rotate: spread drift and noise
        runs = {name: _run(systems[name], name, q, ids, cfg.max_new_tokens) for name in order}
        per_question.append(_question_record(q, ids, order, runs))

    cost_model = None  # what the speculation controller measured (None: no adapter, or not run)
    if OURS_KANGAROO in systems and lm.adapter_path is not None:
        gamma = cfg.gamma or lm.adapter_info["gamma"]
        cost_model = tune.measure_costs(lm, prompts[0], gamma) if cfg.tune else lm.cost_model()
        cost_model = tune.with_ratios(cost_model, tune.llamacpp_step_seconds(per_question, LLAMACPP_PLAIN))

    info = machine_info()
    info["load_average_before"] = load_before
    return {
        "config": {**asdict(cfg), "adapter": str(lm.adapter_path) if lm.adapter_path else None,
                   "n_ctx": n_ctx, "model_path": model_path, "n_questions": len(questions),
                   "systems": names, "pld": {"max_ngram_size": PLD_MAX_NGRAM, "num_pred_tokens": PLD_NUM_PRED_TOKENS},
                   "warmup_tokens": WARMUP_TOKENS, "greedy": True},
        "machine": info,
        "model": {k: v for k, v in lm.info().items()},
        "load_seconds": load_seconds,
        "kangaroo_fallback": _fallback(per_question),
        "cost_model": cost_model,
        "questions": per_question,
    }


def _run(system: Any, name: str, q: dict, prompt_ids: list[int], max_new_tokens: int) -> Run:
    try:
        return system.run(prompt_ids, max_new_tokens)
    except Exception as e:  # a failure of a system under test is a bug to report, not a user error
        raise RuntimeError(f"{LABELS[name]} failed on question {q.get('question_id')} "
                           f"({q['category']}, {len(prompt_ids)} prompt tokens): {e}") from e


def _question_record(q: dict, prompt_ids: list[int], order: list[str], runs: dict[str, Run]) -> dict[str, Any]:
    def same(a: str, b: str) -> Optional[bool]:
        return runs[a].token_ids == runs[b].token_ids if a in runs and b in runs else None

    return {
        "question_id": q.get("question_id"), "category": q["category"], "n_prompt_tokens": len(prompt_ids),
        "order": order, "systems": {name: run.to_dict() for name, run in runs.items()},
        "match_kangaroo_vs_plain": same(OURS_KANGAROO, OURS_PLAIN),
        "match_plain_vs_llamacpp": same(OURS_PLAIN, LLAMACPP_PLAIN),
        "match_pld_vs_llamacpp": same(LLAMACPP_PLD, LLAMACPP_PLAIN),
    }


def _fallback(per_question: list[dict]) -> Optional[str]:
    """Why 'ours Kangaroo' was plain decoding, if it was."""
    for r in per_question:
        k = r["systems"].get(OURS_KANGAROO)
        if k is not None and not k.get("speculative", True):
            return k.get("speculative_fallback") or "speculation was off"
    return None


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


"""Stage 1, *prompts*: the user requests the training responses are generated for.

Two sources, both ending in `prompts.jsonl` (one `{"id", "prompt", "source", ...}` per line):
- a user's file (user_prompts.py): JSONL with a "prompt", "instruction", chat "turns" (first turn)
  or "messages" (first user message) field per line, or plain text with one prompt per line;
- the built-in set (builtin_prompts.py): the model itself writes requests and passages from the
  topic x task seeds in `kangaroo_edge/data/prompt_seeds.json`, one task family per Spec-Bench
  category, sampled (temperature 0.9), then cleaned and deduplicated (cleaning.py).
Texts never to train on (`exclude`: the Spec-Bench questions) are refused, exactly or nearly.

Resumable: built-in attempts are appended to `prompts.raw.jsonl` a chunk at a time, in index
order; a re-run replays them through the same cleaning and deduplication (so prompt ids stay
stable) and only makes the attempts still missing. `prompts.meta.json` records what a finished
stage produced.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from tqdm import tqdm

from .builtin_prompts import Attempt, WriteRequest, Writer, load_seeds, model_writer, plan_attempt, prompt_from_attempt
from .cleaning import Deduplicator, clean_text
from .jsonl import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic
from .user_prompts import read_user_prompts, select_user_prompts

__all__ = ["Deduplicator", "PromptsReport", "WriteRequest", "append_jsonl", "clean_text", "model_writer",
           "read_jsonl", "read_prompts", "read_user_prompts", "run_prompts_stage", "write_json_atomic",
           "write_jsonl_atomic"]

logger = logging.getLogger(__name__)

BUILTIN = "builtin-v2"           # v2 seeds: every Spec-Bench category (v1 workdirs hold "builtin")
ATTEMPTS_PER_PROMPT = 3          # give up after this many attempts per wanted prompt (+ slack)
ATTEMPT_SLACK = 10               # so that a handful of wanted prompts still gets a few retries each
CHUNK = 64                       # attempts whose model calls run together (one batched Writer call: 4x -np keeps its slots busy)


@dataclass
class PromptsReport:
    n_prompts: int
    n_new: int            # prompts produced (or model attempts made) by this run
    n_tokens: int         # tokens the model wrote in this run
    seconds: float
    duplicates: int       # exact + near duplicates removed (all attempts so far)
    rejected: int         # attempts that cleaning rejected, or that matched an excluded text
    skipped: bool         # the stage was already complete

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- built-in prompts

def generate_builtin_prompts(write: Writer, workdir: Path, n_prompts: int, seed: int = 0,
                             seeds: dict | None = None, progress: bool = True, exclude: Iterable[str] = (),
                             chunk: int = CHUNK) -> tuple[list[dict], int, int, int, float, int]:
    """Makes `n_prompts` unique built-in prompts, appending every attempt to prompts.raw.jsonl.
    Returns (rows, duplicates, rejected, tokens written now, seconds, attempts made now)."""
    seeds = seeds or load_seeds()
    raw_path = workdir / "prompts.raw.jsonl"
    dedup, rows, rejected = Deduplicator(), [], 0
    dedup.exclude(exclude)

    def consider(attempt: Attempt, rec: dict) -> None:
        nonlocal rejected
        prompt = prompt_from_attempt(attempt, rec["texts"], [f == "length" for f in rec["finish_reasons"]])
        if prompt is None:
            rejected += 1
        elif dedup.add(prompt) and len(rows) < n_prompts:
            rows.append({"id": f"b{attempt.index:06d}", "prompt": prompt, "source": BUILTIN,
                         "topic": attempt.topic, "task": attempt.task["name"],
                         "category": attempt.task.get("category", attempt.task["name"])})

    done = read_jsonl(raw_path)
    for rec in done:  # replay: same cleaning, same dedup, same ids
        consider(plan_attempt(seeds, rec["index"], seed), rec)
    max_attempts = ATTEMPTS_PER_PROMPT * n_prompts + ATTEMPT_SLACK
    index = done[-1]["index"] + 1 if done else 0
    tokens, t0, made = 0, time.perf_counter(), 0
    bar = tqdm(total=n_prompts, initial=min(len(rows), n_prompts), unit="prompt", desc="prompts",
               disable=not progress, dynamic_ncols=True)
    while len(rows) < n_prompts and index < max_attempts:
        # enough attempts for the prompts still wanted (some are rejected), at most one chunk
        n = min(chunk, max_attempts - index, max(1, n_prompts - len(rows)))
        attempts = [plan_attempt(seeds, i, seed) for i in range(index, index + n)]
        reqs = [r for a in attempts for r in a.requests]
        t = time.perf_counter()
        outs = iter(write(reqs) if reqs else [])
        seconds = round((time.perf_counter() - t) / n, 4)
        before = len(rows)
        for a in attempts:
            got = [next(outs) for _ in a.requests]
            rec = {"index": a.index, "topic": a.topic, "task": a.task["name"], "texts": [g[0] for g in got],
                   "n_tokens": sum(g[1] for g in got), "finish_reasons": [g[2] for g in got], "seconds": seconds}
            append_jsonl(raw_path, rec)
            consider(a, rec)
            tokens += rec["n_tokens"]
        made, index = made + n, index + n
        bar.update(min(len(rows), n_prompts) - min(before, n_prompts))
        bar.set_postfix(attempts=index, dups=dedup.n_duplicates, tok_s=f"{tokens / (time.perf_counter() - t0):.1f}")
    bar.close()
    if len(rows) < n_prompts:
        logger.warning("prompts: only %d unique prompts after %d attempts (wanted %d)", len(rows), index, n_prompts)
    return rows, dedup.n_duplicates, rejected + dedup.n_excluded, tokens, time.perf_counter() - t0, made


# ---------------------------------------------------------------- the stage

def run_prompts_stage(workdir: str | Path, n_prompts: Optional[int], prompts_file: str | Path | None = None,
                      lm=None, seed: int = 0, progress: bool = True, write: Writer | None = None,
                      exclude: Iterable[str] = ()) -> PromptsReport:
    """Writes workdir/prompts.jsonl (and prompts.meta.json) unless a finished run already did.
    `lm` (or a `write` function) is needed only for built-in prompts; `exclude`: texts no prompt
    may duplicate, exactly or nearly (the Spec-Bench questions)."""
    exclude = list(exclude)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = str(Path(prompts_file).resolve()) if prompts_file else BUILTIN
    meta_path = workdir / "prompts.meta.json"
    if meta_path.exists() and (workdir / "prompts.jsonl").exists():
        meta = json.loads(meta_path.read_text())
        if meta["source"] != source:
            raise ValueError(f"{workdir} already holds prompts from {meta['source']}, not {source}; "
                             "use another --workdir (or delete its prompts.* files)")
        if _finished(meta, n_prompts):
            logger.info("prompts: done already (%d prompts in %s)", meta["n_prompts"], workdir / "prompts.jsonl")
            return PromptsReport(meta["n_prompts"], 0, 0, 0.0, meta["duplicates"], meta["rejected"], True)

    t0 = time.perf_counter()
    if prompts_file:
        texts, dups, rejected = select_user_prompts(read_user_prompts(prompts_file), n_prompts, exclude)
        rows = [{"id": f"u{i:06d}", "prompt": t, "source": "user"} for i, t in enumerate(texts)]
        tokens, made, exhausted = 0, len(rows), n_prompts is None or len(rows) < n_prompts
    else:
        if n_prompts is None:
            raise ValueError("built-in prompts need a number of prompts (--n-prompts)")
        if write is None:
            if lm is None:
                raise ValueError("built-in prompts need the model")
            write = model_writer(lm)
        rows, dups, rejected, tokens, _, made = generate_builtin_prompts(write, workdir, n_prompts, seed,
                                                                         progress=progress, exclude=exclude)
        exhausted = len(rows) < n_prompts
    seconds = time.perf_counter() - t0
    if not rows:
        raise ValueError(f"no usable prompts from {source}")
    write_jsonl_atomic(workdir / "prompts.jsonl", rows)
    write_json_atomic(meta_path, {"source": source, "n_requested": n_prompts, "n_prompts": len(rows),
                                  "duplicates": dups, "rejected": rejected, "exhausted": exhausted})
    report = PromptsReport(len(rows), made, tokens, seconds, dups, rejected, False)
    logger.info("prompts: %d prompts from %s (%d duplicates and %d rejected removed); %d new attempts, "
                "%d tokens in %.1f s = %.1f tok/s", len(rows), source, dups, rejected, made, tokens, seconds,
                report.tokens_per_s)
    return report


def _finished(meta: dict, n_prompts: Optional[int]) -> bool:
    """Whether an earlier run already gave what this one asks for: as many prompts, or all there
    were to get (a user file read whole, or built-in attempts exhausted at this size or larger)."""
    if n_prompts is None:
        return meta["n_requested"] is None
    asked_as_much = meta["n_requested"] is None or meta["n_requested"] >= n_prompts
    return meta["n_prompts"] >= n_prompts or (meta["exhausted"] and asked_as_much)


def read_prompts(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "prompts.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the prompts stage first")
    return read_jsonl(path)

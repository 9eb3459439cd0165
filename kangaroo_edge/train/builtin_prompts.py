"""Built-in training prompts: the model writes user requests from topic x task seeds
(`kangaroo_edge/data/prompt_seeds.json`), covering every Spec-Bench category.

Task kinds (each task names its Spec-Bench `category`):
- `instruction`: the model continues a numbered list of user requests from one of the task's
  opening words (small models follow that far better than "write a question about X"), sampled;
- `passage`: the model writes a text in a chat turn (`long` tasks: an article of several hundred
  tokens, for summarization and extraction over a long context), wrapped in one of the task's
  templates ("Summarize: {passage}");
- `passage_question` (RAG): `n_passages` long passages and, written separately, a question on
  their topic, joined as "{passage}\\n{passage}\\n{question}" (a retriever's several hits);
- `fixed`: no model call: one to three sentences from the seeds' `german` list, in the task's
  template ("Translate German to English: {source}"); a 135M model cannot write German.

Every attempt depends only on (seeds, index, seed), so a resumed run makes the same attempts; the
model calls of a chunk of attempts run together through one batched Writer.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

from .cleaning import clean_text

SEED_TEMPERATURE = 0.9
SEED_TOP_P = 0.95
INSTRUCTION_MAX_TOKENS = 64      # a request is one line
PASSAGE_MAX_TOKENS = 160         # material for translate / extract / rewrite ...
LONG_PASSAGE_MAX_TOKENS = 640    # long-context material: an article of several hundred tokens
GERMAN_SENTENCES = (1, 3)        # sentences per fixed translation prompt


@dataclass(frozen=True)
class WriteRequest:
    text: str             # raw text to continue, or (chat=True) one user message
    chat: bool
    max_tokens: int
    stop: Optional[str]   # stop string, e.g. the newline after a one-line request
    seed: int


# Something that writes texts, many at once: [WriteRequest] -> [(text, n_tokens, finish_reason
# "stop" | "length")], in order.
Writer = Callable[[list[WriteRequest]], list[tuple[str, int, str]]]


def load_seeds(path: str | Path | None = None) -> dict:
    if path is None:
        text = resources.files("kangaroo_edge.data").joinpath("prompt_seeds.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    seeds = json.loads(text)
    if not seeds.get("topics") or not seeds.get("tasks"):
        raise ValueError(f"prompt seeds {path or 'prompt_seeds.json'}: need non-empty 'topics' and 'tasks'")
    return seeds


@dataclass(frozen=True)
class Attempt:
    index: int
    topic: str
    task: dict
    requests: tuple[WriteRequest, ...]
    starter: str          # instruction tasks: the request's opening words, given to the model
    fill: dict            # template values ({language}, {tone}, {source}, {template})


@functools.lru_cache(maxsize=4)
def _pair_order(n_topics: int, weights: tuple[int, ...], seed: int) -> tuple[tuple[int, int], ...]:
    """Every (topic, task) pair, a task repeated `weight` times, in a fixed shuffled order."""
    pairs = [(t, k) for t in range(n_topics) for k, w in enumerate(weights) for _ in range(w)]
    random.Random(seed).shuffle(pairs)
    return tuple(pairs)


def _instruction_request(task: dict, topic: str, starter: str, seed: int) -> WriteRequest:
    text = (f"Below are requests that users sent to an AI assistant, one per line. Each is "
            f"{task['ask'].format(topic=topic)}.\n\n1. {starter}")
    return WriteRequest(text, False, INSTRUCTION_MAX_TOKENS, "\n", seed)


def plan_attempt(seeds: dict, index: int, seed: int) -> Attempt:
    """The index-th (topic, task) pair of the fixed shuffle (cycled), with its requests."""
    topics, tasks = seeds["topics"], seeds["tasks"]
    order = _pair_order(len(topics), tuple(int(t.get("weight", 1)) for t in tasks), seed)
    t, k = order[index % len(order)]
    topic, task = topics[t], tasks[k]
    rng = random.Random(f"{seed}:{index}")
    fill = {"language": rng.choice(seeds.get("languages", ["French"])),
            "tone": rng.choice(seeds.get("tones", ["formal"])),
            "template": rng.choice(task.get("templates") or [task.get("template", "{passage}")])}
    write_seed = (seed * 1_000_003 + index) % (1 << 31)
    kind, starter, requests = task["kind"], "", ()
    if kind == "instruction":
        starter = rng.choice(task.get("starters") or [""])
        requests = (_instruction_request(task, topic, starter, write_seed),)
    elif kind in ("passage", "passage_question"):
        max_tokens = LONG_PASSAGE_MAX_TOKENS if task.get("long") else PASSAGE_MAX_TOKENS
        text = f"Write {task['write'].format(topic=topic)}. Reply with only the text itself, no title."
        # RAG: several passages on the topic, as a retriever returns them (the model often stops
        # a "400-word" text after ~100-200 tokens)
        requests = tuple(WriteRequest(text, True, max_tokens, None, (write_seed + 7919 * k) % (1 << 31))
                         for k in range(int(task.get("n_passages", 1))))
        if kind == "passage_question":
            starter = rng.choice(task["starters"])
            requests += (_instruction_request(task, topic, starter, write_seed ^ 0x5F5F),)
    elif kind == "fixed":
        sentences = seeds[task["source"]]
        n = rng.randint(*GERMAN_SENTENCES)
        start = rng.randrange(len(sentences))
        fill["source"] = " ".join(sentences[(start + i) % len(sentences)] for i in range(n))
    else:
        raise ValueError(f"prompt seeds: task {task.get('name')!r} has unknown kind {kind!r}")
    return Attempt(index, topic, task, requests, starter, fill)


def _request_line(attempt: Attempt, text: str, truncated: bool) -> Optional[str]:
    line = (attempt.starter + text).split("\n")[0]
    if len(line.split()) <= len(attempt.starter.split()):
        return None  # the model added nothing to the opening words
    return clean_text(line, first_paragraph=True, truncated=truncated)


def prompt_from_attempt(attempt: Attempt, texts: list[str], truncated: list[bool]) -> Optional[str]:
    """The cleaned training prompt an attempt's outputs give (one text per request), or None."""
    kind, fill = attempt.task["kind"], attempt.fill
    if kind == "instruction":
        return _request_line(attempt, texts[0], truncated[0])
    if kind == "fixed":
        return fill["template"].format(**fill)
    n = len(attempt.requests) - (kind == "passage_question")
    passages = [clean_text(t, first_paragraph=False, truncated=c) for t, c in zip(texts[:n], truncated[:n])]
    if any(p is None for p in passages):
        return None
    passage = "\n".join(passages)
    if kind == "passage_question":
        question = _request_line(attempt, texts[n], truncated[n])
        return None if question is None else f"{passage}\n{question}"
    return fill["template"].format(passage=passage, **{k: v for k, v in fill.items() if k != "template"})


def batched_writer(lm, generator, temperature: float = SEED_TEMPERATURE, top_p: float = SEED_TOP_P) -> Writer:
    """A Writer backed by a batch.BatchedGenerator; `lm` (a KangarooLM) renders chat requests
    through the model's chat template and tokenizes."""
    from ..batch import GenJob
    from ..types import SamplingParams

    def write(reqs: list[WriteRequest]) -> list[tuple[str, int, str]]:
        jobs = []
        for i, req in enumerate(reqs):
            text = lm.apply_chat_template([{"role": "user", "content": req.text}]) if req.chat else req.text
            sampling = SamplingParams(temperature, top_p=top_p, seed=req.seed)
            jobs.append(GenJob(str(i), tuple(lm.tokenize(text)), req.max_tokens, sampling, req.stop))
        done = {r.key: r for r in generator.generate(jobs)}
        return [(done[j.key].text, len(done[j.key].token_ids), done[j.key].finish_reason) for j in jobs]
    return write


def model_writer(lm, temperature: float = SEED_TEMPERATURE, top_p: float = SEED_TOP_P) -> Writer:
    """A Writer that runs each request through a KangarooLM in turn (no batching)."""
    def write(reqs: list[WriteRequest]) -> list[tuple[str, int, str]]:
        out = []
        for req in reqs:
            text = lm.apply_chat_template([{"role": "user", "content": req.text}]) if req.chat else req.text
            r = lm.generate(text, req.max_tokens, temperature=temperature, top_p=top_p, seed=req.seed,
                            stop=req.stop, speculative=False)
            out.append((r.text, len(r.token_ids), r.finish_reason))
        return out
    return write

"""Stage 1, *prompts*: the user requests the training responses are generated for.

Two sources, both ending in `prompts.jsonl` (one `{"id", "prompt", "source", ...}` per line):
- a user's file: JSONL with a "prompt", "instruction", chat "turns" (first turn) or "messages"
  (first user message) field per line, or plain text with one prompt per line;
- the built-in set: the model itself writes requests from the topic x task seeds in
  `kangaroo_edge/data/prompt_seeds.json`, sampled (temperature ~0.9), then cleaned and deduplicated.
  A request is written by continuing a numbered list of requests from a task's opening words
  (small models follow that far better than "write a question about X"); passages for the
  summarize / translate / extract / rewrite tasks are written in a chat turn and wrapped in the
  task's template.

Resumable: built-in attempts are appended to `prompts.raw.jsonl` as they are made; a re-run replays
them through the same cleaning and deduplication (so prompt ids stay stable) and only generates the
attempts still missing. `prompts.meta.json` records what a finished stage produced.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import time
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Optional

from tqdm import tqdm

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
SEED_TEMPERATURE = 0.9
SEED_TOP_P = 0.95
INSTRUCTION_MAX_TOKENS = 64      # a request is one line
PASSAGE_MAX_TOKENS = 160         # material for summarize / translate / extract ...
MIN_CHARS, MAX_CHARS = 12, 2000  # cleaned prompt length bounds
MIN_WORDS = 3
NEAR_DUP_JACCARD = 0.6           # word 3-gram Jaccard at or above which two prompts are near-duplicates
SHINGLE = 3
ATTEMPTS_PER_PROMPT = 3          # give up after this many attempts per wanted prompt (+ slack)



@dataclass(frozen=True)
class WriteRequest:
    text: str             # raw text to continue, or (chat=True) one user message
    chat: bool
    max_tokens: int
    stop: Optional[str]   # stop string, e.g. the newline after a one-line request
    seed: int


# Something that writes text: WriteRequest -> (text, n_tokens, finish_reason "stop" | "length").
Writer = Callable[[WriteRequest], tuple[str, int, str]]


@dataclass
class PromptsReport:
    n_prompts: int
    n_new: int            # prompts produced (or model attempts made) by this run
    n_tokens: int         # tokens the model wrote in this run
    seconds: float
    duplicates: int       # exact + near duplicates removed (all attempts so far)
    rejected: int         # attempts that cleaning rejected
    skipped: bool         # the stage was already complete

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- files (shared by the stages)

def read_jsonl(path: str | Path) -> list[dict]:
    """All complete lines of a JSONL file ([] if it does not exist). A last line cut short by a
    crash is ignored (append_jsonl removes it before appending)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(ln.strip() for ln in lines[i + 1:]):
                raise ValueError(f"{path}:{i + 1}: corrupt line") from None
            logger.warning("%s: ignoring an incomplete last line", path)
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Appends one line and flushes it, so a crash loses at most the line being written. A last
    line cut short by an earlier crash is removed first."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        with open(path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# ---------------------------------------------------------------- cleaning and deduplication

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:question|request|instruction|prompt|task|problem|user|title|"
                    r"query|text|paragraph|passage)\s*(?:\d+)?\s*[:\-]\s*(?:\*\*)?\s*", re.I)
_PREAMBLE = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|absolutely)\b[^\n:]*:\s*", re.I)
_QUOTES = ("\"\"", "''", "\u201c\u201d", "\u2018\u2019", "``", "**")
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>")
_SENTENCE_END = re.compile(r"[.!?)\]\"\u201d](?=\s|$)")


def clean_text(text: str, first_paragraph: bool, truncated: bool = False) -> Optional[str]:
    """Strips the model's wrapping ("Sure, here is a question:", labels, quotes); keeps the first
    paragraph of a request; cuts a truncated text back to its last full sentence. None if what
    is left is outside the length bounds."""
    text = _SPECIAL.sub("", unicodedata.normalize("NFKC", text)).strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    text = _LABEL.sub("", text, count=1).strip()
    if first_paragraph:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = paragraphs[0] if paragraphs else ""
        truncated = truncated and len(paragraphs) == 1
    if truncated:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        text = text[:ends[-1]] if ends else ""
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            text = text[len(left):-len(right)].strip()
    text = re.sub(r"[ \t]+", " ", text).strip()
    if not MIN_CHARS <= len(text) <= MAX_CHARS or len(text.split()) < MIN_WORDS:
        return None
    return text


def normalize(text: str) -> str:
    """Lower case, letters and digits only, single spaces: the key for exact duplicates."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def shingles(norm: str, n: int = SHINGLE) -> frozenset:
    words = norm.split()
    if len(words) <= n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


class Deduplicator:
    """Exact (normalized text) and near-duplicate (word n-gram Jaccard) filter. An inverted index
    from n-gram to prompts limits the Jaccard comparisons to prompts sharing an n-gram."""

    def __init__(self, threshold: float = NEAR_DUP_JACCARD):
        self.threshold = threshold
        self._exact: set[str] = set()
        self._sets: list[frozenset] = []
        self._index: dict[str, list[int]] = {}
        self.n_exact = 0
        self.n_near = 0

    def add(self, text: str) -> bool:
        """True (and remembered) if `text` is new; False for a duplicate."""
        norm = normalize(text)
        if norm in self._exact:
            self.n_exact += 1
            return False
        sh = shingles(norm)
        seen: set[int] = set()
        for g in sh:
            for j in self._index.get(g, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self._sets[j]
                if len(sh & other) / len(sh | other) >= self.threshold:
                    self.n_near += 1
                    return False
        self._exact.add(norm)
        k = len(self._sets)
        self._sets.append(sh)
        for g in sh:
            self._index.setdefault(g, []).append(k)
        return True

    @property
    def n_duplicates(self) -> int:
        return self.n_exact + self.n_near


# ---------------------------------------------------------------- user prompt files

def _prompt_of(row: dict, where: str) -> str:
    for key in ("prompt", "instruction"):
        if isinstance(row.get(key), str):
            text = row[key]
            if key == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
                text = f"{text}\n\n{row['input']}"  # Alpaca-style rows
            return text
    turns = row.get("turns")
    if isinstance(turns, list) and turns:
        first = turns[0]
        return first if isinstance(first, str) else first.get("content", "")
    messages = row.get("messages") or row.get("conversations")
    if isinstance(messages, list):
        for m in messages:
            role = m.get("role", m.get("from"))
            if role in ("user", "human"):
                return m.get("content", m.get("value", ""))
    raise ValueError(f"{where}: no 'prompt', 'instruction', 'turns' or 'messages' field")


def read_user_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSONL file (one object per line) or a text file (one prompt per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    is_jsonl = path.suffix in (".jsonl", ".json") or first.lstrip().startswith("{")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object")
            out.append(_prompt_of(row, f"{path}:{i}"))
        else:
            out.append(line.replace("\\n", "\n"))
    return out


def select_user_prompts(texts: Iterable[str], n_prompts: Optional[int]) -> tuple[list[str], int, int]:
    """Strips, drops empty lines, removes exact and near duplicates, keeps the first n_prompts.
    A user's long prompt is kept whole: the responses stage skips what does not fit the context.
    Returns (prompts, n_duplicates, n_rejected)."""
    dedup, kept, rejected = Deduplicator(), [], 0
    for text in texts:
        text = text.strip()
        if len(text) < 2:
            rejected += 1
            continue
        if dedup.add(text):
            kept.append(text)
            if n_prompts is not None and len(kept) >= n_prompts:
                break
    return kept, dedup.n_duplicates, rejected


# ---------------------------------------------------------------- built-in prompts

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
    request: WriteRequest
    starter: str          # instruction tasks: the request's opening words, given to the model
    fill: dict            # passage tasks: template values ({language}, {tone})


@functools.lru_cache(maxsize=4)
def _pair_order(n_pairs: int, seed: int) -> tuple[int, ...]:
    order = list(range(n_pairs))
    random.Random(seed).shuffle(order)
    return tuple(order)


def plan_attempt(seeds: dict, index: int, seed: int) -> Attempt:
    """The index-th (topic, task) pair of a fixed shuffle of all pairs (cycled), with its request
    to the model. Depends only on (seeds, index, seed), so a resumed run makes the same attempts."""
    topics, tasks = seeds["topics"], seeds["tasks"]
    order = _pair_order(len(topics) * len(tasks), seed)
    pair = order[index % len(order)]
    topic, task = topics[pair // len(tasks)], tasks[pair % len(tasks)]
    rng = random.Random(f"{seed}:{index}")
    fill = {"language": rng.choice(seeds.get("languages", ["French"])),
            "tone": rng.choice(seeds.get("tones", ["formal"]))}
    write_seed = (seed * 1_000_003 + index) % (1 << 31)
    if task["kind"] == "instruction":
        starter = rng.choice(task.get("starters") or [""])
        text = (f"Below are requests that users sent to an AI assistant, one per line. Each is "
                f"{task['ask'].format(topic=topic)}.\n\n1. {starter}")
        request = WriteRequest(text, False, INSTRUCTION_MAX_TOKENS, "\n", write_seed)
    elif task["kind"] == "passage":
        starter = ""
        text = f"Write {task['write'].format(topic=topic)}. Reply with only the text itself, no title."
        request = WriteRequest(text, True, PASSAGE_MAX_TOKENS, None, write_seed)
    else:
        raise ValueError(f"prompt seeds: task {task.get('name')!r} has unknown kind {task['kind']!r}")
    return Attempt(index, topic, task, request, starter, fill)


def prompt_from_attempt(attempt: Attempt, text: str, truncated: bool) -> Optional[str]:
    """The cleaned training prompt an attempt's output gives, or None."""
    if attempt.task["kind"] == "instruction":
        line = (attempt.starter + text).split("\n")[0]
        if len(line.split()) <= len(attempt.starter.split()):
            return None  # the model added nothing to the opening words
        return clean_text(line, first_paragraph=True, truncated=truncated)
    passage = clean_text(text, first_paragraph=False, truncated=truncated)
    if passage is None:
        return None
    return attempt.task["template"].format(passage=passage, **attempt.fill)


def model_writer(lm, temperature: float = SEED_TEMPERATURE, top_p: float = SEED_TOP_P) -> Writer:
    """A Writer backed by a KangarooLM (chat requests go through its chat template)."""
    def write(req: WriteRequest) -> tuple[str, int, str]:
        text = lm.apply_chat_template([{"role": "user", "content": req.text}]) if req.chat else req.text
        r = lm.generate(text, req.max_tokens, temperature=temperature, top_p=top_p, seed=req.seed,
                        stop=req.stop, speculative=False)
        return r.text, len(r.token_ids), r.finish_reason
    return write


def generate_builtin_prompts(write: Writer, workdir: Path, n_prompts: int, seed: int = 0,
                             seeds: dict | None = None, progress: bool = True
                             ) -> tuple[list[dict], int, int, int, float, int]:
    """Makes `n_prompts` unique built-in prompts, appending every attempt to prompts.raw.jsonl.
    Returns (rows, duplicates, rejected, tokens written now, seconds, attempts made now)."""
    seeds = seeds or load_seeds()
    raw_path = workdir / "prompts.raw.jsonl"
    dedup, rows, rejected = Deduplicator(), [], 0

    def consider(attempt: Attempt, rec: dict) -> None:
        nonlocal rejected
        prompt = prompt_from_attempt(attempt, rec["text"], rec["finish_reason"] == "length")
        if prompt is None:
            rejected += 1
        elif dedup.add(prompt) and len(rows) < n_prompts:
            rows.append({"id": f"b{attempt.index:06d}", "prompt": prompt, "source": BUILTIN,
                         "topic": attempt.topic, "task": attempt.task["name"]})

    done = read_jsonl(raw_path)
    for rec in done:  # replay: same cleaning, same dedup, same ids
        consider(plan_attempt(seeds, rec["index"], seed), rec)
    max_attempts = ATTEMPTS_PER_PROMPT * n_prompts + 10
    index = done[-1]["index"] + 1 if done else 0
    tokens, t0, made = 0, time.perf_counter(), 0
    bar = tqdm(total=n_prompts, initial=min(len(rows), n_prompts), unit="prompt", desc="prompts",
               disable=not progress, dynamic_ncols=True)
    while len(rows) < n_prompts and index < max_attempts:
        attempt = plan_attempt(seeds, index, seed)
        t = time.perf_counter()
        text, n_tok, finish = write(attempt.request)
        rec = {"index": index, "topic": attempt.topic, "task": attempt.task["name"], "text": text,
               "n_tokens": n_tok, "finish_reason": finish, "seconds": round(time.perf_counter() - t, 4)}
        append_jsonl(raw_path, rec)
        before = len(rows)
        consider(attempt, rec)
        tokens, made, index = tokens + n_tok, made + 1, index + 1
        bar.update(len(rows) - before)
        bar.set_postfix(attempts=index, dups=dedup.n_duplicates, tok_s=f"{tokens / (time.perf_counter() - t0):.1f}")
    bar.close()
    if len(rows) < n_prompts:
        logger.warning("prompts: only %d unique prompts after %d attempts (wanted %d)", len(rows), index, n_prompts)
    return rows, dedup.n_duplicates, rejected, tokens, time.perf_counter() - t0, made


# ---------------------------------------------------------------- the stage

def run_prompts_stage(workdir: str | Path, n_prompts: Optional[int], prompts_file: str | Path | None = None,
                      lm=None, seed: int = 0, progress: bool = True, write: Writer | None = None) -> PromptsReport:
    """Writes workdir/prompts.jsonl (and prompts.meta.json) unless a finished run already did.
    `lm` (or a `write` function) is needed only for built-in prompts."""
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
        texts, dups, rejected = select_user_prompts(read_user_prompts(prompts_file), n_prompts)
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
                                                                         progress=progress)
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

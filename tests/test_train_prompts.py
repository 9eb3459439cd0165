"""Built-in prompts (kangaroo_edge/train/builtin_prompts.py and prompts.py): every Spec-Bench
category is covered, long-context tasks are long, no held-out question leaks in (neither in the
seeds we ship nor through the model's writing), and an interrupted stage resumes to the same
prompts."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest

from kangaroo_edge.batch import BatchedGenerator
from kangaroo_edge.train.builtin_prompts import (LONG_PASSAGE_MAX_TOKENS, WriteRequest, batched_writer, load_seeds,
                                                 plan_attempt, prompt_from_attempt)
from kangaroo_edge.train.jsonl import read_jsonl
from kangaroo_edge.train.prompts import run_prompts_stage
from kangaroo_edge.train.user_prompts import read_exclusions

from conftest import QUESTIONS
from kangaroo_edge.bench.questions import default_questions_path

SPECBENCH_CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities",
                        "translation", "summarization", "qa", "math_reasoning", "rag"}
LEAK_NGRAM = 6  # words: longer than any phrase two unrelated English or German texts share by chance
# Questions training must never see: the tests' own, and Spec-Bench's dev set where a development
# checkout has it beside the repository (the benchmark's questions; the repository does not ship them)
SPECBENCH = default_questions_path()
HELD_OUT = [pytest.param(QUESTIONS, id="test-questions"),
            pytest.param(SPECBENCH, id="specbench",
                         marks=pytest.mark.skipif(SPECBENCH is None, reason="no Spec-Bench file beside the checkout"))]


def _ngrams(text: str, n: int = LEAK_NGRAM) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _ngrams_of_file(path) -> set[str]:
    return set().union(*(_ngrams(t) for t in read_exclusions(path)))


def scripted_writer(texts_by_seed=None):
    """A deterministic stand-in for the model: each text depends only on its request, so a
    resumed run gets the same outputs. Instruction requests get a distinct question, passages a
    distinct paragraph."""
    calls = []

    def write(reqs: list[WriteRequest]):
        calls.append(len(reqs))
        out = []
        for r in reqs:
            if texts_by_seed and r.seed in texts_by_seed:
                out.append((texts_by_seed[r.seed], 9, "stop"))
            elif r.chat:
                out.append((f"Report {r.seed} describes event {r.seed % 977} in region {r.seed % 89}. "
                            f"It lasted {r.seed % 13} days and involved {r.seed % 31} people.", 30, "stop"))
            else:
                out.append((f" case number {r.seed} differ from case {r.seed % 1009} in kind {r.seed % 71}?", 12, "stop"))
        return out
    write.calls = calls
    return write


@pytest.mark.fast
def test_seeds_cover_every_specbench_category_with_long_tasks():
    seeds = load_seeds()
    cats = Counter(t["category"] for t in seeds["tasks"] for _ in range(t.get("weight", 1)))
    assert set(cats) >= SPECBENCH_CATEGORIES
    long_cats = {t["category"] for t in seeds["tasks"] if t.get("long")}
    assert {"summarization", "rag", "extraction"} <= long_cats
    assert LONG_PASSAGE_MAX_TOKENS >= 400  # "several hundred tokens" of context
    assert len(seeds["german"]) >= 50
    # RAG: two articles (as a retriever returns several), then the question
    rag = next(plan_attempt(seeds, i, 0) for i in range(300) if plan_attempt(seeds, i, 0).task["name"] == "rag")
    assert [r.chat for r in rag.requests] == [True, True, False]
    assert all(r.max_tokens == LONG_PASSAGE_MAX_TOKENS for r in rag.requests[:2])
    texts = ["First article, about one thing. It is long.", "Second article, about another thing.",
             " is the tallest mountain in the region?"]
    prompt = prompt_from_attempt(rag, texts, [False] * 3)
    assert prompt == f"{texts[0]}\n{texts[1]}\n{rag.starter}{texts[2]}"
    # the fixed shuffle reaches every category within a few hundred attempts
    seen = {plan_attempt(seeds, i, 0).task["category"] for i in range(300)}
    assert seen >= SPECBENCH_CATEGORIES


@pytest.mark.fast
@pytest.mark.parametrize("held_out", HELD_OUT)
def test_shipped_seeds_share_no_phrase_with_held_out_questions(held_out):
    held_out_ngrams = _ngrams_of_file(held_out)
    assert len(held_out_ngrams) > 2000  # the file was read (dozens of questions, a few with long passages)
    seeds = load_seeds()
    texts = list(seeds["german"]) + list(seeds["topics"])
    for t in seeds["tasks"]:
        texts += [t.get("ask", ""), t.get("write", ""), t.get("template", "")] + t.get("templates", []) + t.get("starters", [])
    leaks = {g for text in texts for g in _ngrams(text) & held_out_ngrams}
    assert not leaks


@pytest.mark.fast
def test_a_held_out_question_written_by_the_model_is_excluded(tmp_path):
    """The model could write a held-out question word for word (or nearly): it is dropped."""
    seeds = load_seeds()
    held_out = read_exclusions(QUESTIONS)
    question = next(t for t in held_out if 60 < len(t) < 300 and "\n" not in t)
    # the first instruction attempt "writes" the question (after its opening words)
    first = next(plan_attempt(seeds, i, 0) for i in range(50) if plan_attempt(seeds, i, 0).task["kind"] == "instruction")
    leak = question[len(first.starter):] if question.startswith(first.starter) else " " + question
    write = scripted_writer({first.requests[0].seed: leak})
    report = run_prompts_stage(tmp_path, 12, write=write, progress=False, exclude=held_out)
    rows = read_jsonl(tmp_path / "prompts.jsonl")
    assert len(rows) == 12 and report.rejected >= 1
    assert f"b{first.index:06d}" not in {r["id"] for r in rows}
    held_out_ngrams = _ngrams_of_file(QUESTIONS)
    assert not any(_ngrams(r["prompt"]) & held_out_ngrams for r in rows)


@pytest.mark.fast
def test_interrupted_prompts_stage_resumes_to_the_same_prompts(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_prompts_stage(full, 40, write=scripted_writer(), progress=False)
    raw = (full / "prompts.raw.jsonl").read_text().splitlines(keepends=True)
    cut.mkdir()
    (cut / "prompts.raw.jsonl").write_text("".join(raw[:13]) + raw[13][:30])  # a crash mid-chunk
    write = scripted_writer()
    run_prompts_stage(cut, 40, write=write, progress=False)
    assert sum(write.calls) < sum(scripted_writer_calls(full))  # only the missing attempts were made
    assert read_jsonl(cut / "prompts.jsonl") == read_jsonl(full / "prompts.jsonl")
    assert (cut / "prompts.raw.jsonl").read_text() == (full / "prompts.raw.jsonl").read_text()
    cats = {r["category"] for r in read_jsonl(full / "prompts.jsonl")}
    assert len(cats) >= 8


def scripted_writer_calls(workdir):
    """Model requests an uninterrupted run made, from its attempt log."""
    return [len(r["texts"]) for r in read_jsonl(workdir / "prompts.raw.jsonl")]


def test_batched_writer_with_the_model(smollm_path, tmp_path):
    """The real model writes a few prompts through the batched generator (short budgets)."""
    from kangaroo_edge import KangarooLM

    lm = KangarooLM(smollm_path, n_ctx=1024, n_threads=1, device="cpu")
    with BatchedGenerator(lm, n_seq=4, n_ctx_seq=1024) as g:
        write = batched_writer(lm, g)
        short = lambda reqs: write([replace(r, max_tokens=min(r.max_tokens, 24)) for r in reqs])  # noqa: E731
        report = run_prompts_stage(tmp_path, 4, write=short, progress=False)
    rows = read_jsonl(tmp_path / "prompts.jsonl")
    assert 1 <= len(rows) <= 4 and report.n_tokens > 0
    assert all(r["source"] == "builtin-v2" and len(r["prompt"]) >= 12 for r in rows)

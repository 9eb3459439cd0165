"""Encyclopedia articles and news stories for the real-text prompts (text_prompts.py, set text-v2),
from the test data of gensim's wheel on PyPI, read as a zip file (gensim itself is never installed
or imported):

    Wikipedia  enwiki-latest-pages-articles1.xml-...-shortened.bz2: 106 articles of the English
               Wikipedia's first dump file (Anarchism, Abraham Lincoln, Albedo, Aristotle ...), as
               wikitext; parsed with mwparserfromhell, the wikitext parser made for this, into
               ~680 sections and 2.6M characters of prose (CC BY-SA)
    news       lee_background.cor and lee.cor: 348 Australian Broadcasting Corporation news stories,
               one per line (the Lee et al. 2005 document-similarity corpus), ~1k characters each

Spec-Bench's summarization answers news articles (CNN/Daily Mail) and its QA, RAG, STEM and
humanities questions ask about the things encyclopedias explain: the Debian handbook and the Python
docs (text-v1) cover neither.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from .pypi_wheels import pinned_wheel

GENSIM = "gensim==4.4.0"  # the wheel the data comes from: pinned, so a prompt file can be rebuilt
DATA = "gensim/test/test_data/"
WIKIPEDIA = DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS = (DATA + "lee_background.cor", DATA + "lee.cor")

# sections that list rather than explain
SKIPPED_SECTIONS = {"See also", "References", "External links", "Further reading", "Notes", "Bibliography",
                    "Sources", "Footnotes", "Citations", "Works", "Gallery", "Discography", "Filmography"}
# markup whose text is not prose: footnotes, formulas, tables, galleries
SKIPPED_TAGS = {"ref", "references", "math", "table", "gallery", "timeline"}


def _prose(wikicode) -> list[str]:
    """The paragraphs of a piece of wikitext as plain text: footnotes, formulas, tables, files,
    images and categories dropped, templates removed, links reduced to their text."""
    for tag in wikicode.filter_tags(recursive=True, matches=lambda n: str(n.tag).strip().lower() in SKIPPED_TAGS):
        _remove(wikicode, tag)
    for link in wikicode.filter_wikilinks(recursive=True):
        if re.match(r"(?i)\s*(file|image|category|media)\s*:", str(link.title)):
            _remove(wikicode, link)
    text = wikicode.strip_code(normalize=True, collapse=True)
    paragraphs = (" ".join(p.split()) for p in text.split("\n"))
    # a paragraph is prose when it is long and ends a sentence (captions and list items do not)
    return [p for p in paragraphs if len(p) > 80 and p[-1] in ".!?\")”"]


def _remove(wikicode, node) -> None:
    try:
        wikicode.remove(node)
    except ValueError:  # inside a node removed already
        pass


def wikipedia_sections(wikitext_xml: bytes) -> list[tuple[str, str, list[str]]]:
    """(article title, section heading, its paragraphs) of a MediaWiki XML dump; the lead section's
    heading is ""; redirects, other namespaces and listing sections are skipped."""
    import mwparserfromhell  # the train extra's; imported here so text-v1 does not need it

    root = ET.fromstring(wikitext_xml)
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    out: list[tuple[str, str, list[str]]] = []
    for page in root.iter(ns + "page"):
        title = page.findtext(ns + "title") or ""
        text = page.findtext(f"{ns}revision/{ns}text") or ""
        if ":" in title or not text or text.lstrip().lower().startswith("#redirect"):
            continue
        for section in mwparserfromhell.parse(text).get_sections(levels=[2], include_lead=True, include_headings=True):
            headings = section.filter_headings(recursive=False)
            heading = headings[0].title.strip_code().strip() if headings else ""
            if heading in SKIPPED_SECTIONS:
                continue
            if headings:
                section.remove(headings[0])
            paragraphs = _prose(section)
            if paragraphs:
                out.append((title, heading, paragraphs))
    return out


class WikiNews:
    """The Wikipedia sections and news stories of a gensim wheel, read once."""

    def __init__(self, wheel: Path | None = None):
        wheel = Path(wheel) if wheel else pinned_wheel(GENSIM)
        with zipfile.ZipFile(wheel) as z:
            self.sections = wikipedia_sections(bz2.decompress(z.read(WIKIPEDIA)))
            self.news = [" ".join(line.split()) for name in NEWS
                         for line in z.read(name).decode("utf-8", errors="replace").splitlines() if len(line) > 200]
        self.titles = sorted({t for t, _, _ in self.sections})
        if not self.sections or not self.news:
            raise ValueError(f"{wheel}: no Wikipedia sections or news stories found (is it {GENSIM}?)")

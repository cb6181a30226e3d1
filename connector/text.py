"""Text normalisation: HTML to text, e-mail clutter out, tokens, language guess, stems.

Everything language-specific (stopwords, function words, signature and reply markers) is
data in ``connector/data/language.yaml``; adding a language means adding lists there and a
Snowball stemmer name below, not code.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache, lru_cache
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import snowballstemmer

from connector.yamlsource import load_data

# Snowball algorithm per language code; languages without one are matched unstemmed.
SNOWBALL = {
    "en": "english",
    "nb": "norwegian",
    "nn": "norwegian",
    "no": "norwegian",
    "sv": "swedish",
    "da": "danish",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "nl": "dutch",
    "fi": "finnish",
    "it": "italian",
    "pt": "portuguese",
}

# Very long tickets (pasted logs) carry no more routing signal after the first pages;
# cutting keeps classification in milliseconds whatever users paste.
MAX_CHARS = 20_000
# Helpdesks keep subjects far shorter (Zammad, GLPI and RT at most ~255 characters); the
# cut only stops a hostile caller of a webhook from sending a body as a subject.
MAX_SUBJECT_CHARS = 1_000
# A token longer than this is no word of any language (the longest in the thesaurus has 30
# characters, the longest in the three labelled ticket sets 55: a joined exception name);
# it is a pasted blob or URL. It is matched by its exact form only: never stemmed, split as
# a compound or corrected as a typo, whose cost grows with the square of its length (a
# 16,000-character "word" took 54 s), and kept in no stem, key or search memo.
MAX_WORD_LEN = 60
# Steps of word matching allowed per ticket (see Work): ~0.3 s on the reference machine
# under load (bench/poison.py). The largest ticket of the three labelled sets takes
# ~110,000 (736 characters); 20,000 characters of distinct made-up words would take ~6.5 M.
WORK_BUDGET = 500_000

_TOKEN = re.compile(r"[^\W_]+(?:['’.\-/][^\W_]+)*", re.UNICODE)
_JOINERS = re.compile(r"['’.\-/]")
_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "hr",
}
_HEADER_LINE = re.compile(
    r"^\s*(from|to|cc|bcc|sent|date|subject|fra|til|kopi|sendt|dato|emne|emnet)\s*:\s*(.*)$",
    re.I,
)


@dataclass
class Work:
    """The work spent on one ticket, in steps: characters visited by the text stages, index
    lookups, compound cuts tried, typo candidates (each weighed by the characters it
    visits). Counted, never timed, so that one text gets one result however loaded the
    machine is. The budget is for matching words, which past it stops: the ticket is
    matched on the words searched so far. (The text stages are linear and their input is
    capped, MAX_CHARS × 5: a 100 KB HTML mail must not leave its words unread.)"""

    budget: int | None = WORK_BUDGET  # None: unlimited (tests that measure the growth)
    steps: int = 0
    exhausted: bool = False  # the budget ran out: the ticket was matched on its beginning

    def spend(self, steps: int) -> None:
        self.steps += steps

    def over_budget(self, since: int) -> bool:
        """Whether the steps spent since `since` (a count of steps) exceed the budget."""
        return self.budget is not None and self.steps - since > self.budget


def _spend(work: Work | None, steps: int) -> None:
    if work is not None:
        work.steps += steps


@dataclass(frozen=True)
class Intent:
    """Signal groups that together reveal what a ticket asks for (change, private matter)."""

    threshold: float
    explicit_weight: float
    signals: tuple[tuple[str, float, dict[str, tuple[str, ...]]], ...]  # name, weight, phrases


@dataclass(frozen=True)
class LanguageData:
    stopwords: dict[str, frozenset[str]]
    function_words: dict[str, frozenset[str]]
    signature_markers: frozenset[str]  # in _signoff_form
    reply_markers: tuple[re.Pattern[str], ...]
    forward_words: tuple[str, ...]
    forward_prefixes: frozenset[str]
    change_cues: dict[str, tuple[str, ...]]
    change_intent: Intent
    private_intent: Intent
    exact_only: frozenset[str]  # terms matched by their exact form only, of any language
    hyphen_suffixes: frozenset[str]  # of any language: tokens come before the language guess
    word_onsets: dict[str, frozenset[str]]  # per language: clusters a word may begin with
    private_service_words: frozenset[str]  # of any language: names a service for private matters
    # Of any language, as ticket tokens (a phrase's joined by spaces): the device, channel or
    # login words a ticket about almost any system names in passing.
    carrier_words: frozenset[str]
    # Of any language: words every trouble report uses ("error", "feil"), which in a
    # service's description say nothing about which service it is.
    trouble_words: frozenset[str]
    # Per letter, the letters a typo turns it into: neighbouring keys and written variants.
    slips: dict[str, frozenset[str]]

    @property
    def all_stopwords(self) -> frozenset[str]:
        return frozenset().union(*self.stopwords.values())


def _intent(raw: dict[str, Any]) -> Intent:
    return Intent(
        threshold=float(raw["threshold"]),
        explicit_weight=float(raw.get("explicit_weight", 0.0)),
        signals=tuple(
            (
                str(group["name"]),
                float(group["weight"]),
                {lang: tuple(v) for lang, v in group.items() if lang not in ("name", "weight")},
            )
            for group in raw["signals"]
        ),
    )


@cache
def language_data() -> LanguageData:
    raw = load_data(
        resources.files("connector").joinpath("data/language.yaml").read_text(encoding="utf-8")
    )

    def sets(key: str) -> dict[str, frozenset[str]]:
        return {lang: frozenset(fold(w) for w in words) for lang, words in raw[key].items()}

    return LanguageData(
        stopwords=sets("stopwords"),
        function_words=sets("function_words"),
        signature_markers=frozenset(
            {_signoff_form(m) for words in raw["signature_markers"].values() for m in words}
            - {""}  # "--" is caught in code
        ),
        reply_markers=tuple(
            re.compile(p) for words in raw["reply_markers"].values() for p in words
        ),
        forward_words=tuple(fold(w) for words in raw["forward_words"].values() for w in words),
        forward_prefixes=frozenset().union(*sets("forward_prefixes").values()),
        change_cues={lang: tuple(words) for lang, words in raw.get("change_cues", {}).items()},
        change_intent=_intent(raw["change_intent"]),
        private_intent=_intent(raw["private_intent"]),
        exact_only=frozenset().union(*sets("exact_only").values()),
        hyphen_suffixes=frozenset(
            fold(s) for words in raw.get("hyphen_suffixes", {}).values() for s in words
        ),
        private_service_words=frozenset().union(*sets("private_service_words").values())
        if "private_service_words" in raw
        else frozenset(),
        carrier_words=frozenset(
            # Written as tokens already ("cant", not "can't"): tokenize reads this data.
            " ".join(fold(w).split())
            for words in raw.get("carrier_words", {}).values()
            for w in words
        ),
        trouble_words=frozenset().union(*sets("trouble_words").values()),
        word_onsets={
            lang: frozenset(fold(o) for o in onsets)
            for lang, onsets in raw.get("word_onsets", {}).items()
        },
        slips=_slips(raw.get("keyboards", {}).values(), raw.get("letter_variants", [])),
    )


def _slips(layouts: Iterable[list[str]], variants: list[str]) -> dict[str, frozenset[str]]:
    """Neighbours of each letter on any of the keyboards (same row either side; the row
    above straight up and up-right; the row below down-left and straight down), plus its
    written variants."""
    near: dict[str, set[str]] = defaultdict(set)
    for rows in layouts:
        for r, row in enumerate(rows):
            for c, letter in enumerate(row):
                around = (
                    (r, c - 1),
                    (r, c + 1),
                    (r - 1, c),
                    (r - 1, c + 1),
                    (r + 1, c - 1),
                    (r + 1, c),
                )
                near[letter].update(
                    rows[i][j] for i, j in around if 0 <= i < len(rows) and 0 <= j < len(rows[i])
                )
    for pair in variants:
        near[pair[0]].add(pair[1])
        near[pair[1]].add(pair[0])
    return {letter: frozenset(letters) for letter, letters in near.items()}


def fold(text: str) -> str:
    """Unicode-normalise and casefold: 'E-POST' and 'e‑post' compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return text.replace("\u2011", "-").replace("\u2010", "-").replace("\u2013", "-")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        if tag == "blockquote":
            # Quoted mail in HTML replies; the new text is outside it.
            self._quote += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self._skip:
            self._skip -= 1
        if tag == "blockquote" and self._quote:
            self._quote -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip and not self._quote:
            self.parts.append(data)


def html_to_text(text: str, work: Work | None = None) -> str:
    """Plain text of an HTML body; plain text passes through (entities decoded once)."""
    _spend(work, len(text))
    if not looks_like_html(text):
        return html.unescape(text) if "&" in text else text
    _spend(work, 2 * len(text))  # made canonical, then parsed
    parser = _TextExtractor()
    if not parse_markup(parser, text):
        return markup_as_text(text)
    return parsed_text(parser.parts)


# The start of a tag, and of a comment, as the HTML hint knows them (see looks_like_html).
_TAG_OPENING = re.compile(r"<\s*/?[a-zA-Z][a-zA-Z0-9]*\b")
_COMMENT_OPENING = re.compile(r"<\s*!--")


def looks_like_html(text: str) -> bool:
    """Whether the text holds a tag or a comment: what the pattern
    `<\\s*(?:/?[a-zA-Z][a-zA-Z0-9]*\\b[^>]*|!--.*?--)>` finds, in one pass. (That pattern
    itself backtracked: each "<a" scanned the rest of the text for a ">", so 50,000 of
    them took 11 s.) A tag's opening needs some ">" after it, and the first opening has
    the most text after it: so only the first opening of each kind is looked at."""
    tag = _TAG_OPENING.search(text)
    if tag is not None and text.find(">", tag.end()) >= 0:
        return True
    comment = _COMMENT_OPENING.search(text)
    return comment is not None and text.find("-->", comment.end()) >= 0


# The constructs canonical_markup keeps, drops or ends: a start tag, an end tag, a comment's
# and a CDATA section's opening (their end is looked for in code), a declaration or
# processing instruction. Each alternative stops at the next "<" (quoted attribute values
# included) and never backtracks (possessive quantifiers), so a search visits each
# character a bounded number of times.
_TAGS = (
    r"<(?P<start>[a-zA-Z][^\s/>\x00<'\"=]*+)(?:[^<>\"']|\"[^\"<]*+\"|'[^'<]*+')*+>"
    r"|</(?P<end>[a-zA-Z][^\s/>\x00<]*+)[^<>]*+>"
    r"|<[!?](?!\[)[^<>]*+>"  # <!DOCTYPE …>, <?xml …?>, <!…>: no text
)
_OPENINGS = {"comment": "|(?P<comment><!--)", "cdata": r"|(?P<cdata><!\[CDATA\[)"}
# By the openings still worth looking for: once one has no end, the rest are text.
_MARKUP: dict[tuple[str, ...], re.Pattern[str]] = {
    kinds: re.compile(_TAGS + "".join(_OPENINGS[k] for k in kinds))
    for kinds in (("comment", "cdata"), ("comment",), ("cdata",), ())
}
_COMMENT_CLOSE = re.compile(r"--\s*>")
_RAW_TEXT_CLOSE = {  # as html.parser ends a script or style element
    name: re.compile(rf"</\s*{name}\s*>", re.I) for name in HTMLParser.CDATA_CONTENT_ELEMENTS
}


def canonical_markup(markup: str) -> str:
    """The markup as html.parser reads it in linear time: each tag written with its name
    only (attributes carry no text), comments, declarations and script or style content
    dropped, and every "<" that starts no complete construct written as STRAY_LT (text, as
    the parser would have taken it; parsed_text turns it back into "<").

    html.parser itself is quadratic on unfinished constructs: each "<a", "<!--" or
    "<a b='" without an end made it scan the rest of the input again (100 KB: 27 s to
    several minutes on Python 3.11), and on some versions it raises on "<![ "."""
    markup = markup.replace(STRAY_LT, "\ufffd")  # as HTML5 parsers read a NUL
    out: list[str] = []
    # A comment or CDATA section with no end: none after it has one either.
    openings: tuple[str, ...] = ("comment", "cdata")
    written = searched = 0  # markup before `written` is in out; search on from `searched`
    while (found := _MARKUP[openings].search(markup, searched)) is not None:
        at, kind = found.start(), found.lastgroup
        if kind in ("comment", "cdata"):
            if kind == "comment":
                end = _COMMENT_CLOSE.search(markup, found.end())
                close = end.end() if end is not None else -1
            else:
                close = markup.find("]]>", found.end())
                close = close + 3 if close >= 0 else -1
            if close < 0:
                openings = tuple(k for k in openings if k != kind)
                searched = at + 1  # its "<" is text
                continue
            out.append(_as_text(markup[written:at]))
            written = searched = close
            continue
        out.append(_as_text(markup[written:at]))
        written = searched = found.end()
        if kind == "end":
            out.append(f"</{found.group('end').lower()}>")
        elif kind == "start":
            name = found.group("start").lower()
            closed = found.group().endswith("/>")
            out.append(f"<{name}/>" if closed else f"<{name}>")
            if name in _RAW_TEXT_CLOSE and not closed:
                end = _RAW_TEXT_CLOSE[name].search(markup, written)
                if end is None:
                    return "".join(out)  # html.parser drops an unclosed script's rest too
                out.append(f"</{name}>")
                written = searched = end.end()
    out.append(_as_text(markup[written:]))
    return "".join(out)


# A "<" that is text, in canonical markup: NUL, which html.parser passes through as data.
# ("&lt;" cost a Python call per "<" to decode: 50,000 "<a" took 0.3 s.)
STRAY_LT = "\x00"


def _as_text(markup: str) -> str:
    """A stretch of markup that holds no construct: its "<" are text."""
    return markup.replace("<", STRAY_LT)


def parsed_text(parts: Iterable[str]) -> str:
    """The text a parser fed canonical markup collected, its stray "<" restored."""
    return "".join(parts).replace(STRAY_LT, "<")


def parse_markup(parser: HTMLParser, markup: str) -> bool:
    """Feed the markup, made canonical, to the parser; False when the parser failed on it
    anyway. A parser error must not leave a ticket unrouted (retried, then dead-lettered):
    the caller falls back to markup_as_text."""
    try:
        parser.feed(canonical_markup(markup))
        parser.close()
    except Exception:  # whatever html.parser raises on input of this Python version
        return False
    return True


_ANY_TAG = re.compile(r"<[^<>]*+>")


def markup_as_text(markup: str) -> str:
    """The fallback when parsing failed: tags out, entities decoded."""
    return html.unescape(_ANY_TAG.sub(" ", markup))


_SIGNOFF_PUNCTUATION = re.compile(r"[,.!:;–—-]")


def _signoff_form(text: str) -> str:
    """A sign-off line or marker as compared: folded, punctuation as spaces, so that
    "Regards, Tone", "Regards Tone" and "M.v.h. Kari" meet "regards" and "m.v.h"."""
    return " ".join(_SIGNOFF_PUNCTUATION.sub(" ", fold(text)).split())


def _is_signature_start(line: str, markers: AbstractSet[str]) -> bool:
    """Whether a line is a sign-off: a marker, alone or followed by a space and a name, 40
    characters with the space. The markers are a set: what precedes each space in the last
    40 characters (where such a marker ends) is looked up, not every marker tried."""
    if line.strip() in ("--", "__"):  # the classic "-- " signature separator
        return True
    folded = _signoff_form(line)
    if not folded:
        return False
    if folded in markers:
        return True
    space = folded.find(" ", max(0, len(folded) - 40))
    while space >= 0:
        if folded[:space] in markers:
            return True
        space = folded.find(" ", space + 1)
    return False


# A reply marker is a short attribution or separator line; on a longer line the markers'
# patterns would only cost time ("@" × 1,000 took 10 ms per line against the address
# patterns, which try every "@" within 200 characters).
MAX_MARKER_LINE = 300


def strip_mail_clutter(text: str, forwarded: bool = False, work: Work | None = None) -> str:
    """Drop quoted replies, forwarded headers, signatures and '>' quotes; keep the message.

    A forward keeps its content (users forward the error they got), only header lines go;
    `forwarded` (the subject says so, see is_forward) reads every quoted mail as one.
    A signature marker only cuts when real text came before it, so 'Thanks, the printer…'
    as an opening line survives.
    """
    data = language_data()
    kept: list[str] = []
    content_before = 0  # characters kept so far (a running sum: one per line was quadratic)
    for raw_line in text.splitlines():
        _spend(work, len(raw_line) + 1)
        line = raw_line.strip()
        if not line:  # kept, and nothing below can match it (100,000 of them are a ticket)
            kept.append(line)
            continue
        folded = fold(line)
        if len(folded) <= MAX_MARKER_LINE and any(p.search(folded) for p in data.reply_markers):
            if forwarded or any(word in folded for word in data.forward_words):
                continue
            break
        if line.startswith(">"):
            continue
        header = _HEADER_LINE.match(line)
        if header:
            if header.group(1).lower() in ("subject", "emne", "emnet"):
                kept.append(header.group(2))
                content_before += len(header.group(2))
            continue
        if content_before >= 15 and _is_signature_start(line, data.signature_markers):
            break
        kept.append(line)
        content_before += len(line)
    if kept:
        kept[-1] = _without_inline_signoff(kept[-1], data.signature_markers, work)
    return "\n".join(kept).strip()


_SENTENCE_END = re.compile(r"[.!?)]\s+")
# A sign-off is a marker and a name: at most the marker + 40 characters once folded (see
# _is_signature_start). Only the line's last this many characters can hold one; looking
# further back re-read the rest of the line at every sentence end ("ab. " × 25,000: 38 s).
SIGNOFF_SPAN = 200


def _without_inline_signoff(line: str, markers: AbstractSet[str], work: Work | None = None) -> str:
    """'… pivot tables. Regards, Tone' typed on one line: the sign-off and name go too
    (a name like Tone or Per otherwise matches 'toner' or nothing useful)."""
    tail_from = len(line) - SIGNOFF_SPAN
    # The sentence ends from the last non-space before the span on: a sentence end that
    # starts earlier cannot reach into it.
    start = max(0, tail_from - 1)
    while start > 0 and line[start].isspace():
        start -= 1
    _spend(work, len(line) - start)
    for end in _SENTENCE_END.finditer(line, start):
        if end.end() < tail_from:
            continue  # the rest is too long to be a sign-off
        _spend(work, len(line) - end.end())
        if end.start() >= 15 and _is_signature_start(line[end.end() :], markers):
            return line[: end.start() + 1]
    return line


def clean_text(text: str, forwarded: bool = False, work: Work | None = None) -> str:
    """HTML → text, mail clutter removed, length-capped."""
    plain = html_to_text(text[: MAX_CHARS * 5], work)
    return strip_mail_clutter(plain, forwarded, work)[:MAX_CHARS]


_SUBJECT_PREFIX = re.compile(r"^\s*([^\W\d_]{1,12})\s*:")


def is_forward(subject: str) -> bool:
    """Whether a subject's leading prefixes ("RE: VS: …", "Fwd: …") say it was forwarded."""
    prefixes = language_data().forward_prefixes
    rest = fold(subject)
    for _ in range(5):
        found = _SUBJECT_PREFIX.match(rest)
        if found is None:
            return False
        if found.group(1) in prefixes:
            return True
        rest = rest[found.end() :]
    return False


def tokenize(text: str) -> list[str]:
    """Folded word tokens. Inner hyphens, dots and slashes are dropped so 'e-post', 'epost'
    and 'E-POST' are one token, and 'wi-fi' equals 'wifi'; an inflection written after a
    hyphen is dropped too, so 'PC-en', 'VPN-et' and 'ssh-e' are 'pc', 'vpn' and 'ssh'."""
    suffixes = language_data().hyphen_suffixes
    # A match is letters and digits (str.isalnum, as [^\W_]) unless it has a joiner: most
    # words need no rewriting.
    return [w if w.isalnum() else _token(w, suffixes) for w in _TOKEN.findall(fold(text))]


def _token(word: str, suffixes: frozenset[str]) -> str:
    if "-" in word:
        base, _, suffix = word.rpartition("-")
        if suffix in suffixes and len(_JOINERS.sub("", base)) >= 2:
            word = base
    return _JOINERS.sub("", word)


_NORDIC_LANGUAGES = frozenset({"nb", "nn", "no", "da"})
_NORDIC_LETTERS = frozenset("æøå")


def guess_language(tokens: Iterable[str], candidates: Iterable[str], default: str) -> str:
    """Vote by function words; Norwegian/Danish letters tip a tie. Unknown → default."""
    data = language_data()
    langs = [lang for lang in candidates if lang in data.function_words]
    if not langs:
        return default
    # Each distinct word once, its votes times its count (whole and half votes: the sums
    # are exact, so the same as counted one by one).
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    lettered = sum(
        n
        for token, n in counts.items()
        if not token.isascii() and not _NORDIC_LETTERS.isdisjoint(token)  # isascii: O(1)
    )
    votes = dict.fromkeys(langs, 0.0)
    for lang in langs:
        votes[lang] += sum(counts[w] for w in data.function_words[lang].intersection(counts))
        if lang in _NORDIC_LANGUAGES:
            votes[lang] += 0.5 * lettered
    best = max(votes, key=lambda lang: votes[lang])
    return best if votes[best] > 0 else default


@cache
def _stemmer(lang: str) -> snowballstemmer.BaseStemmer | None:
    algorithm = SNOWBALL.get(lang)
    return snowballstemmer.stemmer(algorithm) if algorithm else None


def stem(token: str, lang: str) -> str:
    """The token's Snowball stem; a token longer than MAX_WORD_LEN is no word and stays
    as it is (and out of the memo, which so holds at most 200,000 × MAX_WORD_LEN
    characters)."""
    return token if len(token) > MAX_WORD_LEN else _stem(token, lang)


@lru_cache(maxsize=200_000)
def _stem(token: str, lang: str) -> str:
    stemmer = _stemmer(lang)
    return stemmer.stemWord(token) if stemmer else token

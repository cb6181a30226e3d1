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

_TOKEN = re.compile(r"[^\W_]+(?:['’.\-/][^\W_]+)*", re.UNICODE)
_JOINERS = re.compile(r"['’.\-/]")
_HTML_HINT = re.compile(r"<\s*(?:/?[a-zA-Z][a-zA-Z0-9]*\b[^>]*|!--.*?--)>", re.S)
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
    signature_markers: tuple[str, ...]
    reply_markers: tuple[re.Pattern[str], ...]
    forward_words: tuple[str, ...]
    forward_prefixes: frozenset[str]
    change_cues: dict[str, tuple[str, ...]]
    change_intent: Intent
    private_intent: Intent
    exact_only: frozenset[str]  # terms matched by their exact form only, of any language
    hyphen_suffixes: frozenset[str]  # of any language: tokens come before the language guess
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
        signature_markers=tuple(
            sorted(
                {_signoff_form(m) for words in raw["signature_markers"].values() for m in words}
                - {""},  # "--" is caught in code
                key=len,
                reverse=True,
            )
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


def html_to_text(text: str) -> str:
    """Plain text of an HTML body; plain text passes through (entities decoded once)."""
    if not _HTML_HINT.search(text):
        return html.unescape(text) if "&" in text else text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


_SIGNOFF_PUNCTUATION = re.compile(r"[,.!:;–—-]")


def _signoff_form(text: str) -> str:
    """A sign-off line or marker as compared: folded, punctuation as spaces, so that
    "Regards, Tone", "Regards Tone" and "M.v.h. Kari" meet "regards" and "m.v.h"."""
    return " ".join(_SIGNOFF_PUNCTUATION.sub(" ", fold(text)).split())


def _is_signature_start(line: str, markers: Iterable[str]) -> bool:
    if line.strip() in ("--", "__"):  # the classic "-- " signature separator
        return True
    folded = _signoff_form(line)
    if not folded:
        return False
    for marker in markers:
        if folded == marker or (
            folded.startswith(marker + " ") and len(folded) <= len(marker) + 40
        ):
            return True
    return False


def strip_mail_clutter(text: str, forwarded: bool = False) -> str:
    """Drop quoted replies, forwarded headers, signatures and '>' quotes; keep the message.

    A forward keeps its content (users forward the error they got), only header lines go;
    `forwarded` (the subject says so, see is_forward) reads every quoted mail as one.
    A signature marker only cuts when real text came before it, so 'Thanks, the printer…'
    as an opening line survives.
    """
    data = language_data()
    kept: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        folded = fold(line)
        if any(p.search(folded) for p in data.reply_markers):
            if forwarded or any(word in folded for word in data.forward_words):
                continue
            break
        if line.startswith(">"):
            continue
        header = _HEADER_LINE.match(line)
        if header:
            if header.group(1).lower() in ("subject", "emne", "emnet"):
                kept.append(header.group(2))
            continue
        content_before = sum(len(k) for k in kept)
        if content_before >= 15 and _is_signature_start(line, data.signature_markers):
            break
        kept.append(line)
    if kept:
        kept[-1] = _without_inline_signoff(kept[-1], data.signature_markers)
    return "\n".join(kept).strip()


_SENTENCE_END = re.compile(r"[.!?)]\s+")


def _without_inline_signoff(line: str, markers: Iterable[str]) -> str:
    """'… pivot tables. Regards, Tone' typed on one line: the sign-off and name go too
    (a name like Tone or Per otherwise matches 'toner' or nothing useful)."""
    for end in _SENTENCE_END.finditer(line):
        if end.start() >= 15 and _is_signature_start(line[end.end() :], markers):
            return line[: end.start() + 1]
    return line


def clean_text(text: str, forwarded: bool = False) -> str:
    """HTML → text, mail clutter removed, length-capped."""
    return strip_mail_clutter(html_to_text(text[: MAX_CHARS * 5]), forwarded)[:MAX_CHARS]


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
    return [_token(m.group(), suffixes) for m in _TOKEN.finditer(fold(text))]


def _token(word: str, suffixes: frozenset[str]) -> str:
    if "-" in word:
        base, _, suffix = word.rpartition("-")
        if suffix in suffixes and len(_JOINERS.sub("", base)) >= 2:
            word = base
    return _JOINERS.sub("", word)


def guess_language(tokens: Iterable[str], candidates: Iterable[str], default: str) -> str:
    """Vote by function words; Norwegian/Danish letters tip a tie. Unknown → default."""
    data = language_data()
    langs = [lang for lang in candidates if lang in data.function_words]
    if not langs:
        return default
    votes = dict.fromkeys(langs, 0.0)
    for token in tokens:
        for lang in langs:
            if token in data.function_words[lang]:
                votes[lang] += 1
            if lang in ("nb", "nn", "no", "da") and any(ch in token for ch in "æøå"):
                votes[lang] += 0.5
    best = max(votes, key=lambda lang: votes[lang])
    return best if votes[best] > 0 else default


@cache
def _stemmer(lang: str) -> snowballstemmer.BaseStemmer | None:
    algorithm = SNOWBALL.get(lang)
    return snowballstemmer.stemmer(algorithm) if algorithm else None


@lru_cache(maxsize=200_000)
def stem(token: str, lang: str) -> str:
    stemmer = _stemmer(lang)
    return stemmer.stemWord(token) if stemmer else token

"""Poison tickets (issue 16): hostile text must cost work linear in its length, counted in
steps (connector.text.Work), never in seconds; the classifier stays within a work budget,
deterministically; a parser failure still routes the ticket."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import text as text_module
from connector.catalogue import Catalogue
from connector.classify import MAX_WORD_LEN, CatalogueIndex, build_index, ticket_tokens
from connector.events import ServiceMatch
from connector.hosts.rt import sansio as rt
from connector.mapping import Mapping
from connector.memo import SizedMemo
from connector.route import decide
from connector.text import (
    MAX_CHARS,
    MAX_SUBJECT_CHARS,
    WORK_BUDGET,
    Work,
    canonical_markup,
    clean_text,
    html_to_text,
    looks_like_html,
    stem,
)
from tests.test_route import CATALOGUE, EVENT

# Each poison text of issue 16, and those found while fixing them.
POISON = {
    "newlines": "\n" * 100_000,
    "sentence ends": "ab. " * 25_000,
    "tag openings": "<a" * 50_000,
    "word of 4k": ("skriverpassord" * 300)[:4_000],
    "word of 16k": ("epostkontoen" * 1_400)[:16_000],
    "unfinished markup": "<p>" + "<a" * 50_000,
    "unclosed comments": "<p>" + "<!--" * 25_000,
    "unclosed attribute values": "<p>" + "<a b='" * 16_000,
    "marked section": "<p>Skriveren virker ikke</p><![ " * 100,
    "addresses": ("@" * 299 + "\n") * 333,
}
# The text stages visit each character a bounded number of times (hint, canonical markup,
# parse, lines, sign-off, tokens); the sign-off looks at a line's last SIGNOFF_SPAN
# characters at most once per sentence end in them.
TEXT_STEPS_PER_CHAR = 6
TEXT_STEPS_FIXED = text_module.SIGNOFF_SPAN**2
# Matching costs most for a word just within MAX_WORD_LEN: all its compound cuts and
# typo variants are tried (in both indexes): ~60 × 3 parts × (stem + part) each.
MATCH_STEPS_PER_CHAR = 1_000
MATCH_STEPS_FIXED = 10_000


def _steps(index: CatalogueIndex, body: str, subject: str = "") -> tuple[int, int]:
    """Steps of the text stages and of matching, unlimited by any budget."""
    text_work = Work(budget=None)
    ticket_tokens(subject, body, text_work)
    work = Work(budget=None)
    index.classify(body, subject, work=work)
    return text_work.steps, work.steps - text_work.steps


FRAGMENTS = [
    "\n",
    "ab. ",
    "<a",
    "<p>",
    "</p>",
    "<![ ",
    "<!--",
    "-->",
    " b='",
    "@",
    "> ",
    "Regards, Tone",
    "skriver",
    "passord",
    "epostkonto",
    "x",
    "å",
    ".",
    " ",
    "&amp;",
    "<script>",
    "kl 10:00 skrev ",
    "wrote:",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.sampled_from(FRAGMENTS) | st.text(alphabet="abeknorsæøå", min_size=1, max_size=30),
        min_size=1,
        max_size=8,
    ),
    repeat=st.integers(min_value=1, max_value=3_000),
)
def test_work_grows_at_most_linearly_with_the_text(example_index, pieces, repeat):
    """Whatever the text — a fragment of the poison texts repeated up to thousands of
    times, so that lines, sentences, tags and words grow with it — the text stages and the
    matching spend at most a constant number of steps per character."""
    body = "".join(pieces) * repeat
    text_steps, match_steps = _steps(example_index, body)
    assert text_steps <= TEXT_STEPS_PER_CHAR * len(body) + TEXT_STEPS_FIXED
    assert match_steps <= MATCH_STEPS_PER_CHAR * len(body) + MATCH_STEPS_FIXED


@pytest.mark.parametrize("length", [MAX_WORD_LEN + 1, 4_000, 16_000, 64_000])
def test_a_long_word_costs_steps_linear_in_its_length(example_index, length):
    """The issue's superlinear case: one long "word" (4k characters took 3.6 s, 16k 54 s).
    Past MAX_WORD_LEN it is looked up as it is, in steps proportional to its length."""
    word = ("epostkontoen" * (length // 12 + 1))[:length]
    _, match_steps = _steps(example_index, word)
    assert match_steps <= 20 * length + MATCH_STEPS_FIXED


@pytest.mark.parametrize("name", POISON)
def test_each_poison_text_is_classified_within_the_budget(example_index, name):
    work = Work()
    match = example_index.classify(POISON[name], work=work)
    assert isinstance(match, ServiceMatch)
    body = POISON[name][: MAX_CHARS * 5]
    assert work.steps <= WORK_BUDGET + TEXT_STEPS_PER_CHAR * len(body) + TEXT_STEPS_FIXED
    decision = decide(EVENT, match, CATALOGUE, Mapping(fallback="BPSM Triage"))
    assert decision.queue


def test_the_marked_section_text_still_finds_its_service(example_index):
    # html.parser of Python 3.11.7 raised AssertionError on "<![ ": the job was retried,
    # dead-lettered, and the ticket never routed.
    match = example_index.classify(POISON["marked section"], "Skriveren")
    assert match.service == "printing"


def _made_up_words(count: int) -> str:
    """Distinct made-up words (no catalogue word, each searched as compound and typo)."""
    letters = "bdfghjklmnprstv"
    words = []
    for number in range(count):
        word, n = "", number + 1
        while n:
            n, digit = divmod(n, len(letters))
            word += letters[digit] + "a"
        words.append("zq" + word + "xu")
    return " ".join(words)


def test_past_the_budget_the_ticket_is_matched_on_its_beginning(example_index):
    printer_later = "Hei. " + _made_up_words(600) + " Skriveren skriver ikke ut: papirstopp, toner."
    unlimited = Work(budget=None)
    assert example_index.classify(printer_later, work=unlimited).service == "printing"
    assert unlimited.steps > WORK_BUDGET and not unlimited.exhausted
    work = Work()
    match = example_index.classify(printer_later, work=work)
    assert work.exhausted and work.steps < unlimited.steps
    assert match.service is None  # the words past the budget were never read


def test_work_and_result_do_not_depend_on_what_the_memos_hold():
    """Same text, same steps and same match, whether the words are new to the index or
    cached from earlier tickets: the budget cuts a ticket at the same word on any machine
    at any time."""
    index = build_index(_tiny_catalogue(), ())
    body = "Printeren skrivr ikke. " + _made_up_words(2_000) + " outlook"
    cold = Work(budget=60_000)
    first = index.classify(body, work=cold)
    warm = Work(budget=60_000)
    second = index.classify(body, work=warm)
    assert cold.exhausted and warm.exhausted
    assert (cold.steps, first) == (warm.steps, second)


def test_steps_are_observable_on_a_normal_ticket(example_index):
    work = Work()
    example_index.classify("Skriveren på kontoret skriver ikke ut", "Skriver")
    example_index.classify("Skriveren på kontoret skriver ikke ut", "Skriver", work=work)
    assert 0 < work.steps < WORK_BUDGET // 10 and not work.exhausted


# ----- parser failures ----------------------------------------------------------------------


def test_a_parser_failure_falls_back_to_plain_text_and_the_ticket_routes(
    example_index, monkeypatch
):
    def broken(self, data):
        raise AssertionError("expected name token at '<![ '")

    monkeypatch.setattr(HTMLParser, "feed", broken)
    body = "<div>Skriveren i 2. etasje <b>skriver ikke ut</b> &amp; papirstopp</div>"
    plain = "Skriveren i 2. etasje skriver ikke ut & papirstopp"
    assert " ".join(html_to_text(body).split()) == plain
    match = example_index.classify(body, "Skriveren")
    assert match.service == "printing"
    decision = decide(EVENT, match, CATALOGUE, Mapping(fallback="BPSM Triage"))
    assert decision.process == "reactive" and decision.queue
    # Request Tracker's HTML mails take the same way.
    assert rt.mail_text("<p>Skriveren &amp; toner</p>") == "Skriveren & toner"


def test_marked_section_opening_does_not_raise():
    assert html_to_text("<p>a</p><![ b").split() == ["a", "<![", "b"]


# ----- canonical markup: linear, and what html.parser made of well-formed HTML ---------------


class _Everything(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.parts.append(f"<{tag}>")

    def handle_endtag(self, tag):
        self.parts.append(f"</{tag}>")

    def handle_data(self, data):
        self.parts.append(data)


def _events(markup: str) -> str:
    parser = _Everything()
    parser.feed(markup)
    parser.close()
    return text_module.parsed_text(parser.parts)


_names = st.sampled_from(["p", "div", "br", "b", "blockquote", "span", "td", "o:p", "my-x"])
_attr_values = st.text(alphabet="ab >=/-&;", max_size=6)
_attrs = st.lists(
    st.tuples(st.sampled_from(["class", "href", "style", "data-x"]), _attr_values),
    max_size=2,
).map(lambda attrs: "".join(f' {k}="{v}"' for k, v in attrs))
_words = st.text(alphabet="abc æø.,!?\n", min_size=1, max_size=12)
_node = st.one_of(
    _words,
    st.sampled_from(["&amp;", "&lt;", "&#229;", "&nbsp;", "a < b", "x<3"]),
    st.tuples(_names, _attrs).map(lambda t: f"<{t[0]}{t[1]}>"),
    _names.map(lambda n: f"</{n}>"),
    st.sampled_from(["<br/>", "<!-- note -->", "<!DOCTYPE html>", "<?xml version='1.0'?>"]),
    st.just("<script>if (a<b) { x = '</p>'; }</script>"),
    st.just("<style>p > b { color: red }</style>"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_node, max_size=20).map("".join))
def test_canonical_markup_parses_as_the_markup_did(markup):
    """On well-formed HTML (what helpdesks send), the parser sees the same tags and text
    in canonical markup as in the markup itself: the canonical form only drops what the
    extractor never reads (attributes, comments, declarations, script content)."""
    expected = _events(markup)
    for raw in ("script", "style"):  # their content is dropped, the elements stay
        for content in ("if (a<b) { x = '</p>'; }", "p > b { color: red }"):
            expected = expected.replace(f"<{raw}>{content}</{raw}>", f"<{raw}></{raw}>")
    assert _events(canonical_markup(markup)) == expected


_OLD_HTML_HINT = re.compile(r"<\s*(?:/?[a-zA-Z][a-zA-Z0-9]*\b[^>]*|!--.*?--)>", re.S)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="<>/!-_ aZ1\nø", max_size=24))
def test_looks_like_html_answers_as_the_old_pattern(text):
    assert looks_like_html(text) == bool(_OLD_HTML_HINT.search(text))


def test_looks_like_html_finds_what_the_old_pattern_found():
    old = _OLD_HTML_HINT
    samples = [
        "<p>x",
        "a < b > c",
        "<a",
        "< a>",
        "</ b >",
        "<ab_c>",
        "<a1-b>",
        "x <!-- y --> z",
        "<!-->",
        "<!---->",
        "<!-- open",
        "<<a>",
        "<3 and >",
        "mail <kari@x.no>",
        "plain text",
        "<a" * 10 + ">",
    ]
    for sample in samples:
        assert looks_like_html(sample) == bool(old.search(sample)), sample


def test_canonical_markup_is_linear_on_unfinished_constructs():
    """Each unfinished construct is text; the result has the same length order as the
    input (no construct swallowed the rest) and keeps the text after it."""
    for opening in ("<a", "<!--", "<a b='", "<![CDATA[", "</", "<?", "<![ "):
        markup = "<p>" + opening * 5_000 + "tail"
        canonical = canonical_markup(markup)
        assert canonical.endswith("tail")
        assert canonical.count(text_module.STRAY_LT) == 5_000


# ----- caps ---------------------------------------------------------------------------------


def _tiny_catalogue() -> Catalogue:
    return Catalogue.model_validate(
        {
            "version": 1,
            "languages": ["nb", "en"],
            "services": [
                {
                    "id": "printing",
                    "name": {"en": "Printing", "nb": "Utskrift"},
                    "keywords": {"en": ["printer"], "nb": ["skriver"]},
                },
                {
                    "id": "email",
                    "name": {"en": "E-mail"},
                    "keywords": {"en": ["outlook"]},
                },
                {
                    "id": "devices",
                    "name": {"en": "Devices", "nb": "Utstyr"},
                    "keywords": {"nb": ["app", "skjerm", "server", "disk", "kabel", "pc"]},
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def tiny() -> CatalogueIndex:
    return build_index(_tiny_catalogue(), ())


def test_words_past_the_cap_are_matched_by_their_exact_form_only(tiny):
    at_cap = "x" * (MAX_WORD_LEN - 7) + "skriver"
    past_cap = "x" * (MAX_WORD_LEN - 6) + "skriver"
    assert len(at_cap) == MAX_WORD_LEN and len(past_cap) == MAX_WORD_LEN + 1
    assert tiny._segments(at_cap)  # a compound tail (or whatever the search finds)
    assert tiny._segments(past_cap) == []
    assert tiny.keys(past_cap) == frozenset([past_cap])
    assert past_cap not in tiny.word_keys.memo and past_cap not in tiny._search_cache
    at_cap = ("datamaskin" * 6)[: MAX_WORD_LEN - 3] + "ene"
    assert len(stem(at_cap, "nb")) < MAX_WORD_LEN
    assert stem("x" + at_cap, "nb") == "x" + at_cap  # not stemmed: no word


def test_long_words_leave_the_memos_small(tiny):
    """The issue: a 16k-character word added 265 MB to the stem memo."""
    memos = (tiny.word_keys.memo, tiny._search_cache, tiny._token_cache)
    before = text_module._stem.cache_info().currsize, [memo.bytes for memo in memos]
    for n in range(50):
        word = f"{n}" + "epostkontoen" * 1_400
        tiny.classify(word)
    assert text_module._stem.cache_info().currsize - before[0] < 50
    # The words' hits are kept, bounded by the memo's size; nothing else of them.
    growth = [memo.bytes - was for memo, was in zip(memos, before[1], strict=True)]
    assert growth[0] < 10_000 and growth[1] < 10_000


def test_the_subject_is_cut():
    tokens = ticket_tokens("ord " * 10_000, "")
    assert len(tokens) == MAX_SUBJECT_CHARS // 4


def test_sized_memo_is_bounded_by_size_and_count():
    memo: SizedMemo[str, str] = SizedMemo(max_bytes=100, max_entries=3)
    memo.put("a", "x", 40)
    memo.put("b", "x", 40)
    assert set(memo) == {"a", "b"} and memo.bytes == 80
    memo.put("c", "x", 40)  # 120 bytes would be too many: starts over
    assert set(memo) == {"c"} and memo.bytes == 40
    memo.put("d", "x", 101)  # larger than the whole memo: not kept
    assert "d" not in memo and memo.bytes == 40
    memo.put("e", "x", 1)
    memo.put("f", "x", 1)
    memo.put("g", "x", 1)  # a fourth entry: starts over
    assert set(memo) == {"g"}


def test_the_inline_signoff_is_found_only_in_the_line_end():
    line = "The screen stays black. Regards, Tone"
    assert clean_text(line) == "The screen stays black."
    padded = "The screen stays black. Regards, Tone" + " and more words" * 20
    assert clean_text(padded) == padded


# ----- compound cut positions (direct, see issue 16 "tests that would catch a weaker check")


def _parts(index: CatalogueIndex, word: str) -> set[str]:
    return {segment.word for segment in index._compound(word)}


def test_compound_shortest_head(tiny):
    # The shortest head is MIN_PART_LEN (3) letters: "app|skjerm" is split there...
    assert _parts(tiny, "appskjerm") == {"app", "skjerm"}
    # ...and a known 2-letter head is never cut off: no split of "pc|skjerm" has it.
    assert "pc" not in _parts(tiny, "pcskjerm")


def test_compound_shortest_tail(tiny):
    # A tail is looked up from MIN_TAIL_LEN (5) letters: "server|kabel" has both parts...
    assert _parts(tiny, "serverkabel") == {"server", "kabel"}
    # ...a 4-letter tail is not looked up, known or not.
    assert "disk" not in _parts(tiny, "serverdisk")

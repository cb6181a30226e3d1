"""Catalogue → index; ticket text → ServiceMatch with evidence. Pure and deterministic.

How a ticket is matched:
1. Each service gets weighted terms: its name (strongest), keywords, description words, and
   the terms of every thesaurus concept that its name or keywords mention (the shipped IT
   thesaurus knows that "AnyConnect" and "hjemmekontor" are about VPN, so a catalogue that
   lists only "VPN" still catches them). See build.py.
2. Every term is indexed under its Snowball stems in each catalogue language, so
   "skriveren", "printers" and "printing" meet their terms; multi-word terms match as phrases.
3. A ticket word with no direct hit is tried as a Norwegian compound (head + tail, with the
   linking -s/-e: "eksamens|systemet", "trådløs|nettet") and then as a typo (one edit away,
   two for long words) via a symmetric-delete index, so lookups never scan the catalogue.
   See lookup.py.
4. A service's score sums, over distinct terms hit, field weight × rarity (BM25 idf over
   services) × match quality. Confidence combines the winner's strength with its margin over
   the runner-up. See score.py and calibration.py.

The modules: thesaurus (concepts, packs, topics), words (ticket tokens, word keys, typo and
compound tests), weights (the weights and thresholds), index (the frozen, built index),
build (the builder), lookup (word → postings), intent (change and private cues), score
(scoring and classify), calibration (confidence).
"""

from connector.classify.build import IndexBuilder, build_index
from connector.classify.calibration import CALIBRATION, Features, calibrated
from connector.classify.index import Hit, Posting
from connector.classify.score import CatalogueIndex, LearnedEvidence, coordinated
from connector.classify.thesaurus import (
    PACKS_VARIABLE,
    Concept,
    domain_packs,
    parse_packs,
    parse_thesaurus,
    shipped_thesaurus,
)
from connector.classify.weights import (
    FIELD_WEIGHT,
    MIN_SCORE,
    PART_SHARE,
    PLAIN_PART_SHARE,
    QUALITY,
    SHORTLIST_ABOVE,
    SUBJECT_BOOST,
)
from connector.classify.words import (
    FUZZY2_LEN,
    MIN_COMPOUND_LEN,
    MIN_FUZZY_LEN,
    MIN_PART_LEN,
    MIN_TAIL_LEN,
    Token,
    deletions,
    plausible_slip,
    ticket_tokens,
)
from connector.text import MAX_WORD_LEN

__all__ = [
    "CALIBRATION",
    "FIELD_WEIGHT",
    "FUZZY2_LEN",
    "MAX_WORD_LEN",
    "MIN_COMPOUND_LEN",
    "MIN_FUZZY_LEN",
    "MIN_PART_LEN",
    "MIN_SCORE",
    "MIN_TAIL_LEN",
    "PACKS_VARIABLE",
    "PART_SHARE",
    "PLAIN_PART_SHARE",
    "QUALITY",
    "SHORTLIST_ABOVE",
    "SUBJECT_BOOST",
    "CatalogueIndex",
    "Concept",
    "Features",
    "Hit",
    "IndexBuilder",
    "LearnedEvidence",
    "Posting",
    "Token",
    "build_index",
    "calibrated",
    "coordinated",
    "deletions",
    "domain_packs",
    "parse_packs",
    "parse_thesaurus",
    "plausible_slip",
    "shipped_thesaurus",
    "ticket_tokens",
]

"""The weights and thresholds of matching: how much each kind of evidence counts."""

from __future__ import annotations

FIELD_WEIGHT = {"name": 3.0, "keyword": 2.0, "thesaurus": 1.2, "description": 0.6}
# Words of a multi-word name or keyword also count alone, at this share of the phrase weight.
PART_SHARE = 0.5
# ...unless the word is not IT vocabulary (not in the thesaurus): "home" of "home care" or
# "new" of "new employee" says little on its own.
PLAIN_PART_SHARE = 0.1
# A description link from a thesaurus concept is weaker evidence than a name/keyword link.
DESCRIPTION_LINK = 0.5
DESCRIPTION_MIN_HITS = 2
# Two neighbouring description words, matched as a phrase, weigh this share of a description
# word more (the phrase's own weight; its words still count alone).
DESCRIPTION_PHRASE = 1.0
# A description word the thesaurus does not know counts at this share of an IT word's weight.
PLAIN_DESCRIPTION = 0.5
# A catalogue term that links a concept by its stem only ("skrivere" → "skriver") links it
# this strongly; the word itself links fully.
STEM_LINK = 0.8
NON_IT_KEYWORD = 0.7
COORDINATION = 0.5  # exponent on the number of distinct matched words
QUALITY = {"exact": 1.0, "stem": 0.95, "phrase": 1.0, "compound": 0.8, "fuzzy": 0.7}
SUBJECT_BOOST = 2.0
# A body word's evidence falls linearly with its place in the body, from full at the first
# word to this share at the last: a ticket states its matter first, and what follows is
# more often its context (the user's unit, the device it runs on, steps tried, a closing).
BODY_END_WEIGHT = 0.5
LENGTH_NORM = 0.3  # BM25's b over the number of terms a service has
IDF_SCALE = 3.0
# Catalogues larger than this score exactly only a shortlist of likely services.
SHORTLIST_ABOVE = 300
SHORTLIST = 40
MIN_SCORE = 2.0  # below this the ticket is about nothing in the catalogue
# A private matter picks an unsupported service with this share of MIN_SCORE as evidence.
PRIVATE_SHARE = 0.5
# A matter outside IT (thesaurus scope "outside") must outweigh the best service this many
# times: in a ticket about furniture the IT words are incidental ("the computers we carry
# ourselves"), in an IT ticket the outside words are context ("printer by the coffee machine").
OUTSIDE_RATIO = 2.0
# Carrier words name the device, channel or login a matter runs on ("pc", "phone", "screen",
# "log in"; language data carrier_words), which a ticket about almost any system mentions in
# passing: "SPSS crashes on my PC" is about SPSS. Once a service with evidence of other
# words scores at least MIN_SCORE, carrier words weigh this share in every service. Without
# such a service they weigh fully: "my PC won't start" is about the PC.
CARRIER_SHARE = 0.7

"""Cheap lexical checks that catch near misses embeddings miss: changed numbers, negation, swapped
entities, reversed direction. Each returns the reason it rejects, or ``None``.

They run only on the few candidates above the cosine threshold, so they cost microseconds.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from datapilot.cache._key import normalise
from datapilot.cache._verify import _CJK_CHAR, NEGATIONS, NUMBER_WORDS, key_term_difference

_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
_ORIG_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
_POSSESSIVE = re.compile(r"'s$", re.IGNORECASE)  # "Canada's capital" names Canada

STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did doing have has had having i me my we our you
    your he him his she her it its they them their what which who whom whose this that these those of at by
    for with about against between into through during to from in on off over under again further then
    once here there when where why how all any both each few other some such only own same so than too very
    s t can will just should now and but if or because as until while would could shall may might must
    also get got one ones someone something anyone anything thing things way ways best good really much
    many""".split()
)

# Each pair: a question with one side asks the opposite of the same question with the other.
_OPPOSITES = [
    ("before", "after"),
    ("increase", "decrease"),
    ("increases", "decreases"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("more", "less"),
    ("above", "below"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("best", "worst"),
    ("import", "export"),
    ("win", "lose"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("cheap", "expensive"),
    ("cheapest", "most expensive"),
    ("rise", "fall"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("positive", "negative"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("husband", "wife"),
    ("gain", "lose"),
    ("start", "stop"),
    ("open", "close"),
    ("enable", "disable"),
    ("add", "remove"),
    ("encrypt", "decrypt"),
    ("upload", "download"),
    ("old", "new"),
    ("older", "newer"),
    ("true", "false"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("north", "south"),
    ("east", "west"),
    ("left", "right"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("love", "hate"),
    ("like", "dislike"),
    ("good", "bad"),
    ("better", "worse"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("big", "small"),
    ("large", "small"),
    ("long", "short"),
    ("longer", "shorter"),
    ("hot", "cold"),
    ("rich", "poor"),
    ("success", "failure"),
    ("happy", "sad"),
    ("input", "output"),
    ("send", "receive"),
    ("sending", "receiving"),
    ("client", "server"),
    ("hire", "fire"),
    ("top", "bottom"),
]
_OPPOSITE = {a: b for a, b in _OPPOSITES} | {b: a for a, b in _OPPOSITES}
# Words that give a sentence a direction: "convert USD to EUR" is not "convert EUR to USD".
_DIRECTIONAL = frozenset({"to", "from", "into", "than", "vs", "versus", "over", "onto", "toward", "towards"})


@dataclass(slots=True, frozen=True)
class Parsed:
    words: tuple[str, ...]  # lower-cased word tokens, in order
    content: frozenset[str]  # words minus stop words
    numbers: frozenset[str]
    negations: int
    capitalised: frozenset[str]  # lower-cased forms of words written capitalised, not sentence-initial


@lru_cache(maxsize=65536)
def parse(text: str) -> Parsed:
    original = [_POSSESSIVE.sub("", w) for w in _ORIG_WORD.findall(text)]
    words = tuple(w.lower() for w in original)
    numbers = frozenset(NUMBER_WORDS.get(w, w) for w in words if any(c.isdigit() for c in w) or w in NUMBER_WORDS)
    caps = frozenset(
        w.lower()
        for i, w in enumerate(original)
        if i > 0 and w[:1].isupper() and original[i - 1] not in (".", "?", "!") and w.lower() not in STOPWORDS
    )
    content = frozenset(w for w in words if w not in STOPWORDS)
    return Parsed(words, content, numbers, sum(w in NEGATIONS for w in words), caps)


def _opposed(a: Parsed, b: Parsed) -> bool:
    only_a = set(a.words) - set(b.words)
    only_b = set(b.words) - set(a.words)
    return any(_OPPOSITE.get(w) in only_b for w in only_a)


def _reordered(a: Parsed, b: Parsed) -> bool:
    """The same content words in another order around a directional word ("A to B" / "B to A")."""
    if a.content != b.content or not (_DIRECTIONAL & set(a.words)):
        return False
    seq_a = [w for w in a.words if w not in STOPWORDS]
    seq_b = [w for w in b.words if w not in STOPWORDS]
    return seq_a != seq_b and sorted(seq_a) == sorted(seq_b)


def guard(query: str, candidate: str, *, substitutions: bool = True) -> str | None:
    """The reason ``candidate`` must not answer ``query`` although they embed close, or ``None``."""
    if normalise(query) == normalise(candidate):
        return None  # the same question typed differently: nothing differs
    a, b = parse(unicodedata.normalize("NFKC", query)), parse(unicodedata.normalize("NFKC", candidate))
    # In text with CJK a word token runs into the characters around it ("38度"): the bilingual check
    # (``key_term_difference``) compares numbers there.
    if a.numbers != b.numbers and not (_CJK_CHAR.search(query) or _CJK_CHAR.search(candidate)):
        return "numbers"
    if (a.negations % 2) != (b.negations % 2):
        return "negation"
    if (a.capitalised - b.content) and (b.capitalised - a.content):
        return "entity"
    if _opposed(a, b):
        return "direction"
    if _reordered(a, b):
        return "direction"
    return key_term_difference(query, candidate, substitutions=substitutions)

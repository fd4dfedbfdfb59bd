"""When two stories are the same: the rule the store applies before it keeps a new article.

A story is the same as a stored one when its canonical URL is one the stored story was already
carried under (any of its sources'), or when both titles are near-identical and both were
published within `window` of each other. Near-identical: the title keys (lower-case words,
`gateway.news.normalise.title_key`) are equal, or their similarity is at least
`SIMILARITY` (difflib's ratio over the keys; 0.9 admits "Bitcoin tops $70K as ETF inflows
surge" against "Bitcoin Tops $70K As ETF Inflows Surge!" or a changed word in a long title,
not two different stories about the same coin). Titles of fewer than `MIN_WORDS` words are only
merged when equal: "Bitcoin price" and "Bitcoin prices" are not evidence of one story. And the
numbers in both must be the same: "BTC tops $67,000" and "BTC tops $68,000" are two days of a
templated headline, not one story told twice.

Pure; the store calls a `story_matcher` on the candidates its index finds, inside the
transaction that inserts, so two sources delivering the story at once still store it once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Final

__all__ = ["MIN_WORDS", "SIMILARITY", "same_story", "story_matcher"]

SIMILARITY: Final = 0.9
MIN_WORDS: Final = 4
_NUMBER_RE: Final = re.compile(r"\w*\d\w*")


def story_matcher(key: str) -> Callable[[str], bool]:
    """Whether another title key names the same story as `key` (see the module docstring).

    The store compares one new title with many stored ones: the work that depends only on
    `key` (difflib's index of it, its numbers, its length) is done once, here.
    """
    words = key.count(" ") + 1
    numbers = sorted(_NUMBER_RE.findall(key))
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(key)  # difflib indexes the second sequence: once, for every candidate
    size = len(key)
    letters = {letter: key.count(letter) for letter in set(key)}

    def matches(other: str) -> bool:
        if other == key:
            return True
        if min(words, other.count(" ") + 1) < MIN_WORDS:
            return False
        if 2 * min(size, len(other)) < SIMILARITY * (size + len(other)):
            return False  # the lengths alone rule it out (difflib's real_quick_ratio)
        # Cheapest first: the letters both share (difflib's quick_ratio, with str.count doing
        # the counting in C), then the numbers, then the real ratio.
        shared = sum(min(n, other.count(letter)) for letter, n in letters.items())
        if 2 * shared < SIMILARITY * (size + len(other)):
            return False
        if sorted(_NUMBER_RE.findall(other)) != numbers:
            return False
        matcher.set_seq1(other)
        return matcher.ratio() >= SIMILARITY

    return matches


def same_story(key: str, other: str) -> bool:
    """Whether two title keys name the same story (see the module docstring)."""
    return story_matcher(key)(other)

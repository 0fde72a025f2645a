"""The lexical near-miss guards on the examples semantic caches famously get wrong."""

from __future__ import annotations

import pytest

from datapilot.cache import guard


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("What is the capital of Austria?", "What is the capital of Australia?", "entity"),
        ("How do I get from Paris to Berlin?", "How do I get from Berlin to Paris?", "direction"),
        ("Convert 100 USD to EUR", "Convert 200 USD to EUR", "numbers"),
        ("How many legs does a spider have?", "How many legs does a spider not have?", "negation"),
        ("Is it safe to eat raw eggs?", "Isn't it safe to eat raw eggs?", "negation"),
        ("What are the advantages of Python?", "What are the disadvantages of Python?", "direction"),
        ("Best laptop under 500 dollars", "Best laptop under five hundred dollars", "numbers"),
        ("Should I buy Tesla stock?", "Should I sell Tesla stock?", "direction"),
    ],
)
def test_near_misses_are_rejected(a: str, b: str, reason: str) -> None:
    assert guard(a, b) == reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "what's the capital city of France"),
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
        ("How many legs does a spider have?", "How many legs do spiders have?"),
        ("Convert 100 USD to EUR", "convert 100 usd into eur please"),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert guard(a, b) is None

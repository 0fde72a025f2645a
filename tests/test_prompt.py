from __future__ import annotations

import pytest

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import Message
from datapilot.models.prompt import FEW_SHOT_EXAMPLES, StopFilter, few_shot_dialogue


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    f = StopFilter(stops)
    out = "".join(f.feed(p) for p in pieces)
    return out + f.flush(), f.stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "expected", "stopped"),
    [
        ([], ["a", "b"], "ab", False),
        (["\nUser:"], ["Hello", "\n", "Us", "er:", " more"], "Hello", True),
        (["\nUser:"], ["Hello", "\n", "Us", "ed"], "Hello\nUsed", False),  # held back, then released
        (["END"], ["the EN", "D is"], "the ", True),
        (["ab", "b"], ["xab"], "x", True),  # earliest stop wins
        (["stop"], ["sto"], "sto", False),  # a held-back tail is flushed at the end
    ],
)
def test_stop_filter(stops: list[str], pieces: list[str], expected: str, stopped: bool) -> None:
    assert run(stops, pieces) == (expected, stopped)


def test_stop_filter_never_emits_a_stop_prefix_early() -> None:
    f = StopFilter(["\n\n"])
    assert f.feed("line\n") == "line"
    assert f.feed("\nnext") == ""
    assert f.stopped


def test_few_shot_dialogue() -> None:
    p = few_shot_dialogue(
        [
            Message("system", "You are terse."),
            Message("user", "Hi"),
            Message("assistant", "Hello."),
            Message("user", " Bye "),
        ]
    )
    assert p.text.startswith("You are terse.\n")
    assert p.text.endswith("User: Hi\nAssistant: Hello.\n\nUser: Bye\nAssistant:")
    for question, answer in FEW_SHOT_EXAMPLES:
        assert f"User: {question}\nAssistant: {answer}" in p.text
    assert "\nUser:" in p.stop and p.strip_leading_space
    with pytest.raises(InvalidRequestError):
        few_shot_dialogue([])

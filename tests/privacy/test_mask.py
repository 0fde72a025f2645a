# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""Placeholders and their restoration, whole and streamed, and the policies applied by the model manager."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from datapilot.core import Message, ModelChunk, ModelConfig, ModelOutput, ModelRequest, ToolCall, ToolCallDelta, Usage
from datapilot.models import ModelManager
from datapilot.privacy import (
    Masker,
    PiiBlockedError,
    PrivacyReport,
    RequestPrivacy,
    generate_corpus,
    policy_for,
)

EMAIL, PHONE, ID = "zhang.san@example.com", "138 1234 5678", "11010519491231002X"
TEXT = f"我叫张伟，邮箱 {EMAIL}，电话 {PHONE}；备用邮箱 {EMAIL}，身份证 {ID}。Dr. Alice Brown 也在。"


def test_round_trip_and_stable_placeholders() -> None:
    masker = Masker()
    masked = masker.mask(TEXT)
    for value in (EMAIL, PHONE, ID, "张伟", "Alice Brown"):
        assert value not in masked
    assert masked.count("<EMAIL_1>") == 2 and "<EMAIL_2>" not in masked  # the same value, the same placeholder
    assert "<PHONE_1>" in masked and "<IDCARD_1>" in masked and "<NAME_1>" in masked and "<NAME_2>" in masked
    assert masker.restore(masked) == TEXT
    assert masker.counts == {"email": 2, "phone": 1, "cn_id": 1, "person": 2}
    assert masker.distinct == {"email": 1, "phone": 1, "cn_id": 1, "person": 2}
    # A second text of the same request reuses the placeholders; a new value gets the next number.
    assert masker.mask(f"again {EMAIL}, and bob@example.org") == "again <EMAIL_1>, and <EMAIL_2>"
    assert masker.restore("<EMAIL_2> wrote to <EMAIL_1>; <EMAIL_9> is unknown") == (
        f"bob@example.org wrote to {EMAIL}; <EMAIL_9> is unknown"
    )


def test_round_trip_on_generated_texts() -> None:
    for case in generate_corpus(100, seed=3):
        masker = Masker()
        masked = masker.mask(case.text)
        for _, value in case.values():
            assert value not in masked
        assert masker.restore(masked) == case.text


def test_placeholders_already_in_the_request_are_never_handed_out() -> None:
    masker = Masker()
    texts = ["the template says <EMAIL_1> and <EMAIL_2>", f"mine is {EMAIL}"]
    masker.reserve(texts)
    masked = [masker.mask(t) for t in texts]
    assert masked[1] == "mine is <EMAIL_3>"
    assert masker.restore(masked[0] + " " + masked[1]) == f"the template says <EMAIL_1> and <EMAIL_2> mine is {EMAIL}"


def test_tool_call_arguments_are_restored_as_json() -> None:
    masker = Masker(detector=lambda text: [])  # no detection: the value is planted directly
    tricky = 'O"Neil\\x'
    ph = masker.placeholder("person", tricky)
    args = json.dumps({"name": ph})
    from datapilot.privacy import json_escape

    assert json.loads(masker.restore(args, json_escape)) == {"name": tricky}


def _split_everywhere(text: str) -> list[list[str]]:
    """``text`` cut in two at every position, and in three at every pair of positions."""
    out = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    out += [[text[:i], text[i:j], text[j:]] for i in range(len(text) + 1) for j in range(i, len(text) + 1)]
    return out


def test_stream_restore_at_every_split() -> None:
    masker = Masker()
    masked = masker.mask(f"mail {EMAIL} or call {PHONE}")
    answer = "Sure: <PHONE_1> first, then <EMAIL_1>.<EMAIL_1><"  # adjacent placeholders, a stray "<" at the end
    expected = masker.restore(answer)
    assert expected == f"Sure: {PHONE} first, then {EMAIL}.{EMAIL}<" and masked
    placeholders = list(masker.mapping)

    def partial_at_end(raw: str) -> str:
        """The longest end of ``raw`` that could still become a placeholder: all a restorer may hold."""
        for k in range(len(raw), 0, -1):
            if any(p.startswith(raw[-k:]) and p != raw[-k:] for p in placeholders):
                return raw[-k:]
        return ""

    for pieces in _split_everywhere(answer):
        restorer = masker.restorer()
        out, raw = [], ""
        for piece in pieces:
            out.append(restorer.feed(piece))
            raw += piece
            assert restorer.held == partial_at_end(raw), (pieces, raw)  # held back: that, never more
        assert "".join(out) + restorer.flush() == expected, pieces


def test_stream_holds_back_only_a_possible_placeholder() -> None:
    masker = Masker()
    masker.mask(f"{EMAIL} {PHONE}")
    r = masker.restorer()
    assert r.feed("a <b> and x < y, <EM") == "a <b> and x < y, " and r.held == "<EM"
    assert r.feed("AIL_2> no") == "<EMAIL_2> no" and r.held == ""  # not one of this request's placeholders
    assert r.feed("<PHONE_1") == "" and r.held == "<PHONE_1"
    assert r.feed(">!") == f"{PHONE}!"
    assert r.feed("<P") == "" and r.flush() == "<P"  # flushed as it is at the end
    assert r.feed("<X") == "<X"  # cannot start any placeholder: nothing held
    nothing = Masker()
    nothing.mask("no personal data here")
    assert nothing.restorer().feed("<EMA") == "<EMA"


async def _chunks(pieces: list[str], tool_pieces: list[str] | None = None) -> AsyncIterator[ModelChunk]:
    for p in pieces:
        yield ModelChunk(p)
    for p in tool_pieces or []:
        yield ModelChunk(tool_calls=[ToolCallDelta(0, arguments=p)])
    yield ModelChunk("", finish_reason="stop", usage=Usage(3, len(pieces)))


async def test_request_privacy_streams_and_whole_answers() -> None:
    privacy = RequestPrivacy("remote", "mask", "req-1", "chat")
    request = ModelRequest(
        model="remote",
        messages=[
            Message("system", "be brief"),
            Message("user", f"email {EMAIL}"),
            Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", json.dumps({"phone": PHONE})),)),
        ],
    )
    sent = privacy.request(request)
    assert sent.messages is not None and request.messages is not None
    assert sent.messages[1].content == "email <EMAIL_1>" and request.messages[1].content == f"email {EMAIL}"
    assert json.loads(sent.messages[2].tool_calls[0].arguments) == {"phone": "<PHONE_1>"}
    assert sent.request_id == request.request_id
    chunks = [
        c async for c in privacy.stream(_chunks(["You wrote <EMA", "IL_1", "> and <PHO"], ['{"to": "<EMAIL', '_1>"}']))
    ]
    assert "".join(c.text for c in chunks) == f"You wrote {EMAIL} and <PHO"
    args = "".join(d.arguments for c in chunks for d in c.tool_calls or [])
    assert json.loads(args) == {"to": EMAIL}
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == Usage(3, 3)
    out = privacy.output(
        ModelOutput("<EMAIL_1> / <PHONE_1>", "stop", Usage(), tool_calls=[ToolCall("c", "f", '"<PHONE_1>"')])
    )
    assert out.text == f"{EMAIL} / {PHONE}" and out.tool_calls[0].arguments == f'"{PHONE}"'
    assert privacy.report is not None and privacy.report.counts == {"email": 1, "phone": 1}


async def test_block_refuses_naming_kinds_not_values(caplog: pytest.LogCaptureFixture) -> None:
    reports: list[PrivacyReport] = []
    privacy = RequestPrivacy("remote", "block", "req-2", "completion", sink=reports.append)
    with caplog.at_level(logging.INFO, "datapilot.privacy"), pytest.raises(PiiBlockedError) as err:
        privacy.request(ModelRequest(model="remote", prompt=f"{EMAIL} {PHONE} {EMAIL}"))
    e = err.value
    assert e.status_code == 400 and e.code == "pii_blocked" and e.error_type == "invalid_request_error"
    assert e.param == "prompt" and "email, phone" in e.message
    assert EMAIL not in e.message and "13812345678" not in e.message.replace(" ", "")
    assert reports[0].policy == "block" and reports[0].counts == {"email": 2, "phone": 1}
    assert "blocked completion request req-2 to model remote: email=2 phone=1" in caplog.text
    assert EMAIL not in caplog.text
    clean = ModelRequest(model="remote", prompt="how many orders over 1000 in 2024?")
    assert RequestPrivacy("remote", "block").request(clean) is clean


async def test_off_passes_through() -> None:
    privacy = RequestPrivacy("local", "off")
    request = ModelRequest(model="local", prompt=f"{EMAIL}")
    assert privacy.request(request) is request
    chunks = _chunks(["<EMAIL_1>"])
    assert privacy.stream(chunks) is chunks
    assert privacy.texts([EMAIL]) == [EMAIL]


def test_default_policy_by_backend() -> None:
    assert policy_for(ModelConfig(name="r", backend="openai_compat", base_url="http://x/v1")) == "mask"
    assert policy_for(ModelConfig(name="l", backend="llama_cpp")) == "off"
    assert policy_for(ModelConfig(name="r", backend="openai_compat", privacy="off")) == "off"
    assert policy_for(ModelConfig(name="l", backend="scripted", privacy="block")) == "block"
    with pytest.raises(ValueError):
        ModelConfig(name="x", backend="scripted", privacy="redact")  # type: ignore[arg-type]


# --- through the model manager (the scripted backend echoes what it received) -------------------------


class Spy:
    """Wraps a backend's calls to record what reached it."""

    def __init__(self, manager: ModelManager, name: str) -> None:
        backend: Any = manager.workers[name].backend
        self.seen: list[str] = []
        stream, embed, rerank = backend.stream, backend.embed, backend.rerank

        def spy_stream(request: ModelRequest) -> AsyncIterator[ModelChunk]:
            self.seen.append(request.prompt if request.messages is None else request.messages[-1].content)
            return stream(request)

        async def spy_embed(texts: list[str]) -> Any:
            self.seen.extend(texts)
            return await embed(texts)

        async def spy_rerank(query: str, documents: list[str]) -> Any:
            self.seen.extend([query, *documents])
            return await rerank(query, documents)

        backend.stream, backend.embed, backend.rerank = spy_stream, spy_embed, spy_rerank


async def _manager(tmp_path: Path, reports: list[PrivacyReport]) -> ModelManager:
    models = [
        ModelConfig(name="masked", backend="scripted", privacy="mask", params={"token_delay_s": 0}),
        ModelConfig(name="blocked", backend="scripted", privacy="block"),
        ModelConfig(name="local", backend="scripted"),
    ]
    manager = ModelManager(models, tmp_path, privacy_sink=reports.append)
    await manager.start()
    return manager


async def test_manager_masks_chat_and_completion_and_restores(tmp_path: Path) -> None:
    reports: list[PrivacyReport] = []
    manager = await _manager(tmp_path, reports)
    try:
        spy = Spy(manager, "masked")
        chat = ModelRequest(model="masked", messages=[Message("user", f"mail {EMAIL}, call {PHONE}, ID {ID}")])
        out = await manager.generate(chat)
        assert out.text == f"You said: mail {EMAIL}, call {PHONE}, ID {ID}"
        assert spy.seen[-1] == "mail <EMAIL_1>, call <PHONE_1>, ID <IDCARD_1>"
        chunks = [c async for c in manager.stream(chat)]
        assert "".join(c.text for c in chunks) == out.text and chunks[-1].finish_reason == "stop"
        completion = ModelRequest(model="masked", prompt=f"{EMAIL}")
        assert (await manager.generate(completion)).text == f"You said: {EMAIL}"
        assert spy.seen[-1] == "<EMAIL_1>"
        assert [(r.operation, r.counts) for r in reports] == [
            ("chat", {"email": 1, "phone": 1, "cn_id": 1}),
            ("chat", {"email": 1, "phone": 1, "cn_id": 1}),
            ("completion", {"email": 1}),
        ]
        assert reports[0].request_id == chat.request_id
        # Embeddings and rerank of a masking model see placeholders too.
        await manager.embed("masked", [f"contact {EMAIL}"])
        await manager.rerank("masked", f"who is {EMAIL}", [f"{EMAIL} is Zhang", "nobody"])
        assert spy.seen[-4:] == ["contact <EMAIL_1>", "who is <EMAIL_1>", "<EMAIL_1> is Zhang", "nobody"]
    finally:
        await manager.close()


async def test_manager_block_and_off(tmp_path: Path) -> None:
    reports: list[PrivacyReport] = []
    manager = await _manager(tmp_path, reports)
    try:
        ask = [Message("user", f"my card is 4111 1111 1111 1111 and mail {EMAIL}")]
        for call in (
            lambda: manager.generate(ModelRequest(model="blocked", messages=ask)),
            lambda: manager.embed("blocked", [EMAIL]),
        ):
            with pytest.raises(PiiBlockedError, match=r"personal data \(email"):
                await call()
        with pytest.raises(PiiBlockedError, match=r"\(email, bank_card\)"):
            manager.stream(ModelRequest(model="blocked", messages=ask))  # refused before streaming starts
        ok = await manager.generate(ModelRequest(model="blocked", messages=[Message("user", "orders over 1000?")]))
        assert ok.text == "You said: orders over 1000?"
        spy = Spy(manager, "local")  # a local model: off by default, the values reach it
        out = await manager.generate(ModelRequest(model="local", messages=ask))
        assert spy.seen == [ask[0].content] and out.text == f"You said: {ask[0].content}"
        assert [r.policy for r in reports] == ["block", "block", "block"]
    finally:
        await manager.close()


async def test_closing_a_restored_stream_stops_the_backend(tmp_path: Path) -> None:
    words = " ".join(["<EMAIL_1>"] * 300)
    config = ModelConfig(
        name="r", backend="scripted", privacy="mask", params={"replies": [words], "token_delay_s": 0.01}
    )
    manager = ModelManager([config], tmp_path)
    await manager.start()
    try:
        backend: Any = manager.workers["r"].backend
        stream = manager.stream(ModelRequest(model="r", messages=[Message("user", f"to {EMAIL}")]))
        async for chunk in stream:
            assert "<EMAIL_1>" not in chunk.text
            if backend.tokens_generated >= 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        assert backend.tokens_generated < 10
    finally:
        await manager.close()

# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""Masking through the real servers: a DataPilot whose models are ``openai_compat`` proxies (remote
models) in front of an upstream DataPilot serving scripted models, with the official OpenAI client.

The upstream model ``guard`` echoes what it received ("You said: ...") unless it receives one of the
personal values, when it answers ``LEAKED`` instead: so a proxy that let a value through cannot hide it
by restoring the answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import openai
import pytest
from openai import OpenAI

from datapilot.privacy import Masker
from datapilot.testing import ServerProcess, start_server, write_config

EMAIL, PHONE, ID = "zhang.san@example.com", "13812345678", "11010519491231002X"
SECRET = f"请联系我：邮箱 {EMAIL}，手机 {PHONE}，身份证号 {ID}。"
LEAK_RULE = f"{EMAIL}|{PHONE}|{ID}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("privacy")
    upstream_cfg = write_config(
        tmp / "upstream.toml",
        [{"name": "guard", "backend": "scripted", "params": {"rules": [[LEAK_RULE, "LEAKED"]]}}],
    )
    upstream = start_server(tmp, upstream_cfg, tmp / "upstream-home", "upstream")
    try:
        remote = {"backend": "openai_compat", "base_url": upstream.v1, "upstream_model": "guard"}
        proxy_cfg = write_config(
            tmp / "proxy.toml",
            [
                {"name": "remote", **remote},  # the default for a remote model: mask
                {"name": "remote-block", **remote, "privacy": "block"},
                {"name": "remote-off", **remote, "privacy": "off"},
                {"name": "remote-embed", **remote, "params": {"capabilities": ["embedding"]}},
            ],
        )
        proxy = start_server(tmp, proxy_cfg, tmp / "proxy-home", "proxy")
        try:
            yield upstream, proxy
        finally:
            proxy.stop()
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def clients(servers: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[OpenAI, OpenAI]]:
    upstream, proxy = servers
    with (
        OpenAI(base_url=upstream.v1, api_key="unused", max_retries=0, timeout=60) as direct,
        OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0, timeout=60) as via,
    ):
        yield direct, via


def _ask(client: OpenAI, model: str, text: str, stream: bool) -> str:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    if not stream:
        out = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        return out.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True])
def test_remote_model_never_receives_the_values_and_the_user_sees_them(
    clients: tuple[OpenAI, OpenAI], servers: tuple[ServerProcess, ServerProcess], stream: bool
) -> None:
    direct, via = clients
    # The upstream answers LEAKED to anything holding a value: the guard works.
    assert _ask(direct, "guard", SECRET, stream) == "LEAKED"
    # Through the remote model: the upstream saw none of the values, the user gets them back.
    assert _ask(via, "remote", SECRET, stream) == f"You said: {SECRET}"
    # What the upstream answered is the echo of the masked prompt, placeholders and all.
    masked = Masker().mask(SECRET)
    assert masked == "请联系我：邮箱 <EMAIL_1>，手机 <PHONE_1>，身份证号 <IDCARD_1>。"
    assert _ask(direct, "guard", masked, stream) == f"You said: {masked}"
    # The proxy's log records kinds and counts, never the values.
    log = servers[1].log_text()
    assert "privacy: masked chat request" in log and "cn_id=1 email=1 phone=1" in log
    assert EMAIL not in log and PHONE not in log and ID not in log


def test_remote_completion_is_masked_and_restored(clients: tuple[OpenAI, OpenAI]) -> None:
    _, via = clients
    out = via.completions.create(model="remote", prompt=f"mail {EMAIL} now")
    assert out.choices[0].text == f"You said: mail {EMAIL} now"


def test_off_sends_the_values(clients: tuple[OpenAI, OpenAI]) -> None:
    _, via = clients
    assert _ask(via, "remote-off", SECRET, stream=False) == "LEAKED"
    assert _ask(via, "remote-off", SECRET, stream=True) == "LEAKED"


@pytest.mark.parametrize("stream", [False, True])
def test_block_refuses_with_an_openai_error(clients: tuple[OpenAI, OpenAI], stream: bool) -> None:
    _, via = clients
    with pytest.raises(openai.BadRequestError) as err:
        _ask(via, "remote-block", SECRET, stream)
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict)
    assert body["code"] == "pii_blocked" and body["type"] == "invalid_request_error" and body["param"] == "messages"
    assert "(email, cn_id, phone)" in body["message"]
    assert EMAIL not in body["message"] and PHONE not in body["message"] and ID not in body["message"]
    assert _ask(via, "remote-block", "how many orders over 1000 in 2024?", stream) == (
        "You said: how many orders over 1000 in 2024?"
    )


def test_remote_embeddings_are_masked(clients: tuple[OpenAI, OpenAI]) -> None:
    direct, via = clients
    text = f"contact {EMAIL} about invoice 98765432"
    proxied = via.embeddings.create(model="remote-embed", input=[text]).data[0].embedding
    as_masked = direct.embeddings.create(model="guard", input=["contact <EMAIL_1> about invoice 98765432"])
    as_sent = direct.embeddings.create(model="guard", input=[text])
    assert np.allclose(proxied, as_masked.data[0].embedding, atol=1e-6)
    assert not np.allclose(proxied, as_sent.data[0].embedding, atol=1e-3)

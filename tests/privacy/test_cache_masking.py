"""The semantic cache in front of a remote model keeps only the masked form: real servers (a proxy
DataPilot with the cache on, in front of an upstream DataPilot), the official OpenAI client.

The upstream ``guard`` answers ``LEAKED`` if it ever receives a personal value, else echoes what it got
(with placeholders). The proxy's home folder (cache database, vectors, logs) is searched for the values
afterwards: none may be there. A second request that differs only in its personal values is a cache hit,
answered with its own values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from datapilot.testing import ServerProcess, start_server, write_config

ALICE, BOB = "alice.wong@example.com", "bob.li@example.org"
PHONE_A, PHONE_B = "13812345678", "13987654321"
NEW_VALUE = "carol@example.net"  # only the upstream's answer holds it


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    tmp = tmp_path_factory.mktemp("cache-masking")
    rules = [[f"{ALICE}|{BOB}|{PHONE_A}|{PHONE_B}", "LEAKED"], ["forward", f"Forwarded to {NEW_VALUE}."]]
    upstream_cfg = write_config(
        tmp / "upstream.toml", [{"name": "guard", "backend": "scripted", "params": {"rules": rules}}]
    )
    upstream = start_server(tmp, upstream_cfg, tmp / "upstream-home", "upstream")
    try:
        proxy_cfg = write_config(
            tmp / "proxy.toml",
            [{"name": "remote", "backend": "openai_compat", "base_url": upstream.v1, "upstream_model": "guard"}],
            cache={"enabled": True, "embedders": {"default": {"kind": "hash"}}},
        )
        home = tmp / "proxy-home"
        srv = start_server(tmp, proxy_cfg, home, "proxy")
        try:
            yield srv, home
        finally:
            srv.stop()
    finally:
        upstream.stop()


def _ask(srv: ServerProcess, text: str, stream: bool = False) -> tuple[str, str | None]:
    """The answer and the proxy's cache header (hit or miss)."""
    body = {"model": "remote", "messages": [{"role": "user", "content": text}], "stream": stream, "temperature": 0}
    if stream:
        with httpx.stream("POST", f"{srv.v1}/chat/completions", json=body, timeout=60) as resp:
            resp.raise_for_status()
            header = resp.headers.get("x-datapilot-cache")
            import json

            parts = [
                json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in resp.iter_lines()
                if line.startswith("data: {") and json.loads(line[6:])["choices"]
            ]
        return "".join(parts), header
    with OpenAI(base_url=srv.v1, api_key="unused", max_retries=0, timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="remote", messages=[{"role": "user", "content": text}], temperature=0
        )
        return raw.parse().choices[0].message.content or "", raw.headers.get("x-datapilot-cache")


def _home_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_the_cache_keeps_the_masked_form_and_answers_each_request_with_its_own_values(
    proxy: tuple[ServerProcess, Path],
) -> None:
    srv, home = proxy
    first, status = _ask(srv, f"Send the quarterly report to {ALICE}, phone {PHONE_A}.")
    assert status == "miss" and "LEAKED" not in first
    assert ALICE in first and PHONE_A in first  # restored for the user
    # The same question with other people's values: answered from the cache, with the new values.
    second, status = _ask(srv, f"Send the quarterly report to {BOB}, phone {PHONE_B}.")
    assert status == "hit"
    assert BOB in second and PHONE_B in second and ALICE not in second and PHONE_A not in second
    streamed, status = _ask(srv, f"Send the quarterly report to {BOB}, phone {PHONE_B}.", stream=True)
    assert status == "hit" and streamed == second
    entries = httpx.get(f"{srv.url}/api/cache/entries", params={"model": "remote"}, timeout=30).json()
    stored = str(entries)
    assert "<EMAIL_1>" in stored and "<PHONE_1>" in stored and ALICE not in stored and BOB not in stored
    blob = _home_bytes(home)
    for value in (ALICE, BOB, PHONE_A, PHONE_B):
        assert value.encode() not in blob, value


def test_an_answer_with_personal_data_the_question_did_not_hold_is_not_cached(
    proxy: tuple[ServerProcess, Path],
) -> None:
    srv, home = proxy
    for _ in range(2):
        answer, status = _ask(srv, f"Please forward the invoice from {ALICE}.")
        assert NEW_VALUE in answer and status == "miss"  # never stored, so never a hit
    assert NEW_VALUE.encode() not in _home_bytes(home)

"""The outbound policy: link-local and cloud metadata hosts refused by default (literal addresses and
names resolving to them), loopback and private ranges allowed, [security] allow/deny lists, and a
refusal through the API is a 400 ``url_not_allowed`` that leaves nothing created."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.core.config import DataSettings, ModelConfig, SecuritySettings, Settings
from datapilot.core.errors import ConfigError, InvalidRequestError
from datapilot.core.outbound import OutboundPolicy, URLNotAllowedError, outbound_policy, set_outbound_policy
from datapilot.datasource import DataSourceConfig, DataSources

FAKE_DNS = {
    "evil.example": ["169.254.169.254"],
    "v6evil.example": ["fd00:ec2::254"],
    "mixed.example": ["93.184.216.34", "169.254.10.1"],
    "db.internal.example": ["10.1.2.3"],
    "public.example": ["93.184.216.34"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host in FAKE_DNS:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
                for a in FAKE_DNS[host]
            ]
        if isinstance(host, str) and host.endswith(".example"):
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest",
        "http://100.100.100.200/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./x",
        "http://169.254.1.2:8080/v1",
        "http://[fe80::1]:8000/v1",
        "http://[::ffff:169.254.169.254]/",
        "postgresql://bob@169.254.169.254:5432/db",
        "http://evil.example/v1",
        "http://v6evil.example/v1",
        "http://mixed.example/v1",
    ],
)
def test_metadata_and_link_local_refused(url: str) -> None:
    with pytest.raises(URLNotAllowedError) as caught:
        OutboundPolicy().check_url(url, what="base_url", param="base_url")
    err = caught.value
    assert err.status_code == 400 and err.code == "url_not_allowed" and err.param == "base_url"
    assert "not allowed" in err.message and ("metadata" in err.message or "link-local" in err.message)
    assert "security.outbound_allow" in err.message


def test_refusal_names_host_and_rule() -> None:
    with pytest.raises(URLNotAllowedError, match=r"evil\.example resolves to 169\.254\.169\.254: cloud metadata"):
        OutboundPolicy().check_url("http://evil.example/v1")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://localhost:11434/v1",
        "http://[::1]:8000/v1",
        "http://10.0.0.5/v1",
        "http://192.168.1.20:5432",
        "postgresql+psycopg://bob@172.16.0.9:5432/x",
        "http://db.internal.example/",
        "http://public.example/v1",
        "http://unresolvable.example/v1",
        "sqlite:///tmp/x.db",
        "http://100.100.100.201/",
        "",
    ],
)
def test_loopback_private_and_public_allowed(url: str) -> None:
    OutboundPolicy().check_url(url)


def test_allow_and_deny_settings() -> None:
    policy = OutboundPolicy.from_settings(
        SecuritySettings(
            outbound_allow=["169.254.169.254", "*.trusted.example", "10.9.9.9"],
            outbound_deny=["10.0.0.0/8", "public.example", "bad.example"],
        )
    )
    policy.check_url("http://169.254.169.254/")  # an explicit allow beats the built-in rule
    policy.check_url("http://10.9.9.9/")  # and the operator's own deny
    policy.check_url("http://x.trusted.example/")
    with pytest.raises(URLNotAllowedError, match="link-local"):
        policy.check_url("http://169.254.1.1/")  # the rest of the built-in rules still hold
    with pytest.raises(URLNotAllowedError, match=r"outbound_deny entry '10\.0\.0\.0/8'"):
        policy.check_url("http://10.1.1.1/")
    with pytest.raises(URLNotAllowedError, match=r"db\.internal\.example resolves to 10\.1\.2\.3.*10\.0\.0\.0/8"):
        policy.check_url("http://db.internal.example/")
    with pytest.raises(URLNotAllowedError, match=r"outbound_deny entry 'public\.example'"):
        policy.check_url("http://api.public.example/")  # a name entry covers subdomains
    with pytest.raises(URLNotAllowedError, match=r"bad\.example"):
        policy.check_url("http://bad.example/")  # refused by name, without resolving
    # Deny everything but one host.
    strict = OutboundPolicy.of(allow=["127.0.0.1"], deny=["0.0.0.0/0", "::/0"])
    strict.check_url("http://127.0.0.1:5670/v1")
    with pytest.raises(URLNotAllowedError):
        strict.check_url("http://10.0.0.1/")


def test_bad_entries_are_config_errors() -> None:
    with pytest.raises(ValueError, match="neither a CIDR"):
        SecuritySettings(outbound_deny=["http://x/"])
    s = Settings(security={"outbound_allow": ["fe80::/10"]})  # type: ignore[arg-type]
    OutboundPolicy.from_settings(s.security).check_url("http://[fe80::1]/")
    from datapilot.core.config import load_settings

    with pytest.raises(ConfigError, match="outbound_deny"):
        load_settings(None, security={"outbound_deny": ["a b"]})


async def test_data_source_refused_on_add_and_on_connect(tmp_path: Path) -> None:
    sources = DataSources(DataSettings(sample=False), tmp_path / "home")
    try:
        with pytest.raises(InvalidRequestError) as caught:
            await sources.add(DataSourceConfig(name="pg", kind="postgresql", url="postgresql://u:p@evil.example/db"))
        assert caught.value.code == "url_not_allowed" and "evil.example" in caught.value.message
        assert sources.list() == []
        with pytest.raises(URLNotAllowedError, match=r"169\.254\.0\.0/16"):
            await sources.add(
                DataSourceConfig(name="pg", kind="postgresql", url="postgresql://u@127.0.0.1/db?host=169.254.3.3"),
                test=False,
            )
        # A definition stored before (or under another policy) is checked again when connecting.
        sources.store.add(DataSourceConfig(name="old", kind="postgresql", url="postgresql://u@169.254.169.254/db"))
        with pytest.raises(URLNotAllowedError, match="cloud metadata"):
            await sources.connector("old")
    finally:
        await sources.close()


async def test_process_wide_policy_for_backends() -> None:
    from datapilot.models.backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend(
        ModelConfig(name="m", backend="openai_compat", base_url="http://169.254.169.254/v1"), None
    )
    try:
        with pytest.raises(URLNotAllowedError, match="model 'm': base_url"):
            await backend.load()
        before = outbound_policy()
        set_outbound_policy(OutboundPolicy.of(allow=["169.254.169.254"]))
        try:
            await backend.load()
        finally:
            set_outbound_policy(before)
    finally:
        await backend.close()


def test_api_refusals_are_400_and_create_nothing(tmp_path: Path) -> None:
    from datapilot.server.roles import standalone_app

    db_path = tmp_path / "t.db"
    sqlite3.connect(db_path).close()
    settings = Settings(
        home=tmp_path / "home",
        models=[ModelConfig(name="a", backend="scripted")],
        data=DataSettings(sample=False),
        security=SecuritySettings(outbound_deny=["blocked.example"]),
    )
    app = standalone_app(settings)
    with TestClient(app) as client:
        for body in (
            {"name": "pg", "kind": "postgresql", "url": "postgresql://u:p@169.254.169.254:5432/db", "test": False},
            {"name": "pg", "kind": "mysql", "url": "mysql://u:p@evil.example/db", "test": False},
            {"name": "pg", "kind": "postgresql", "url": "postgresql://u:p@blocked.example/db", "test": False},
        ):
            resp = client.post("/api/datasources", json=body)
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error["code"] == "url_not_allowed" and error["type"] == "invalid_request_error"
            assert body["url"].split("@")[1].split(":")[0].split("/")[0] in error["message"]  # type: ignore[union-attr]
        assert client.get("/api/datasources").json()["data"] == []

        for base_url in ("http://169.254.169.254/v1", "http://metadata.google.internal/v1", "http://evil.example/v1"):
            resp = client.post(
                "/api/models", json={"name": "up", "backend": "openai_compat", "base_url": base_url, "api_key": "k"}
            )
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "url_not_allowed" and resp.json()["error"]["param"] == "base_url"
        assert [m["name"] for m in client.get("/api/models").json()["models"]] == ["a"]

        ok = client.post(
            "/api/models", json={"name": "up", "backend": "openai_compat", "base_url": "http://127.0.0.1:9/v1"}
        )
        assert ok.status_code == 201, ok.text
        ok = client.post("/api/datasources", json={"name": "t", "kind": "sqlite", "url": f"sqlite:///{db_path}"})
        assert ok.status_code == 200, ok.text


class _Upstream:
    """A tiny OpenAI-compatible upstream on 127.0.0.1 that counts the requests reaching it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        upstream = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                upstream.hits += 1
                self.rfile.read(int(self.headers["Content-Length"]))
                body = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": "m",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


async def test_a_name_rebound_to_a_refused_address_after_the_check_is_not_connected_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name resolves to an allowed address when the URL is checked, then to a refused
    one when the connection is made. The connection-time check refuses it and nothing reaches the host."""
    from datapilot.core.errors import UpstreamError
    from datapilot.core.types import Message, ModelRequest
    from datapilot.models._openai_http import OpenAIHTTP

    upstream = _Upstream()
    answers = iter([["10.1.2.3"]])  # the first resolution (the definition-time check); 127.0.0.1 after
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("rebind.example", "stable.example"):
            addrs = next(answers, ["127.0.0.1"]) if host == "rebind.example" else ["127.0.0.1"]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in addrs]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    previous = outbound_policy()
    set_outbound_policy(OutboundPolicy.of(deny=["127.0.0.0/8"], allow=["stable.example"]))
    request = ModelRequest(model="m", messages=[Message("user", "hi")])
    try:
        url = f"http://rebind.example:{upstream.port}/v1"
        outbound_policy().check_url(url)  # passes: the name resolves to 10.1.2.3 now
        http = OpenAIHTTP(url)
        with pytest.raises(UpstreamError) as refused:
            await http.generate(request, "m")
        await http.aclose()
        assert refused.value.code == "url_not_allowed" and "127.0.0.1" in refused.value.message
        assert upstream.hits == 0
        # The same path connects when the policy allows the host: the check is what refused it above.
        allowed = OpenAIHTTP(f"http://stable.example:{upstream.port}/v1")
        assert (await allowed.generate(request, "m")).text == "ok"
        await allowed.aclose()
        assert upstream.hits == 1
    finally:
        set_outbound_policy(previous)
        upstream.close()

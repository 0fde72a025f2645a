"""Rate limits and token budgets, enforced before the model is called: a key's requests and tokens per
minute, a model's limits shared by every key, a tenant's daily budget; 429 with Retry-After in OpenAI's
error shape (streaming too, before any event); refused calls are not charged; usage per tenant, key and
model at /api/usage (kept across restarts) and at /metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.core.config import ModelConfig, Settings
from datapilot.core.keys import KeyStore
from datapilot.core.limits import SlidingWindow, UsageLedger, until_next_day, until_next_month, utc_day
from datapilot.server.app import create_app
from datapilot.server.roles import standalone_app

ADMIN = "sk-limits-admin-key"
HASHED = {"kind": "hash"}
REPLY = {"replies": ["one two three"]}  # 3 completion tokens; "user: hi" is 2 prompt tokens
TOKENS_PER_CALL = 5


def settings(home: Path, cache: dict[str, Any] | None = None, **limits: Any) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "models": [
                ModelConfig(name="echo", backend="scripted", params=REPLY),
                ModelConfig(name="shared", backend="scripted", params=REPLY, rpm=2),
            ],
            "server": {"api_keys": [ADMIN]},
            "cache": cache or {"enabled": False},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED, "sample": False},
            "limits": {"budget_cache_s": 0, **limits},  # a budget changed over the API applies to the next call
        }
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    cfg = settings(home)
    with TestClient(standalone_app(cfg)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(home: Path) -> Iterator[KeyStore]:
    with KeyStore.for_home(home) as store:
        yield store


def new_key(keys: KeyStore, tenant: str, **kw: Any) -> dict[str, str]:
    record, key = keys.create(tenant, level=kw.pop("level", "write"), **kw)
    return {"Authorization": f"Bearer {key}", "x-key-id": record.id}


def chat(client: TestClient, auth: dict[str, str], model: str = "echo", **body: Any) -> Any:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return client.post("/v1/chat/completions", json=payload, headers=auth)


def usage(client: TestClient, auth: dict[str, str], **params: str) -> dict[str, Any]:
    resp = client.get("/api/usage", headers=auth, params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def assert_openai_429(resp: Any, code: str, type_: str) -> dict[str, Any]:
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["code"], err["type"]) == (code, type_)
    assert "Try again" in err["message"] or "resets" in err["message"]
    return {**err, "retry_after": retry_after}


def key_usage(report: dict[str, Any], key_id: str) -> dict[str, int]:
    (mine,) = [k for k in report["by_key"] if k["key_id"] == key_id]
    today: dict[str, int] = mine["today"]
    return today


def test_a_burst_over_a_key_s_rpm_gets_429_and_only_admitted_requests_are_charged(
    client: TestClient, keys: KeyStore
) -> None:
    auth = new_key(keys, "burst", rpm=3)
    statuses = [chat(client, auth).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    err = assert_openai_429(chat(client, auth), "rate_limit_exceeded", "requests")
    assert "3 requests per minute" in err["message"] and auth["x-key-id"] in err["message"]
    assert err["retry_after"] <= 60
    (report,) = usage(client, auth)["data"]
    assert report["tenant"] == "burst"
    assert key_usage(report, auth["x-key-id"]) == {
        "requests": 3,
        "prompt_tokens": 6,
        "completion_tokens": 9,
        "total_tokens": 3 * TOKENS_PER_CALL,
    }
    # A route that does not call a model is not counted against the key's rpm.
    assert client.get("/api/whoami", headers=auth).status_code == 200


def test_a_key_s_tokens_per_minute(client: TestClient, keys: KeyStore) -> None:
    auth = new_key(keys, "tpm", tpm=8)
    assert chat(client, auth).status_code == 200  # 0 of 8 used: admitted, uses 5
    assert chat(client, auth).status_code == 200  # 5 of 8: admitted, crosses to 10
    err = assert_openai_429(chat(client, auth), "rate_limit_exceeded", "requests")
    assert "8 tokens per minute" in err["message"] and "10 used" in err["message"]
    (report,) = usage(client, auth)["data"]
    assert report["today"]["total_tokens"] == 2 * TOKENS_PER_CALL
    assert report["today"]["requests"] == 2


def test_a_model_s_rpm_is_shared_by_every_key(client: TestClient, keys: KeyStore) -> None:
    first, second = new_key(keys, "model-a"), new_key(keys, "model-b")
    assert chat(client, first, "shared").status_code == 200
    assert chat(client, second, "shared").status_code == 200
    for auth in (first, second):
        err = assert_openai_429(chat(client, auth, "shared"), "rate_limit_exceeded", "requests")
        assert "model 'shared'" in err["message"] and "2 requests per minute" in err["message"]
    assert chat(client, first, "echo").status_code == 200  # other models are not affected
    by_model = {m["model"]: m["today"]["requests"] for m in usage(client, first)["data"][0]["by_model"]}
    assert by_model == {"shared": 1, "echo": 1}


def test_a_tenant_s_budget_stops_requests_at_the_boundary(client: TestClient, keys: KeyStore) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    resp = client.put("/api/tenants/budgeted/budget", json={"daily_tokens": 12}, headers=admin)
    assert resp.status_code == 200, resp.text
    auth = new_key(keys, "budgeted")
    assert [chat(client, auth).status_code for _ in range(3)] == [200, 200, 200]  # 0, 5, 10 < 12: the third crosses
    err = assert_openai_429(chat(client, auth), "insufficient_quota", "insufficient_quota")
    assert "15 of its daily budget of 12 tokens" in err["message"]
    assert err["retry_after"] == pytest.approx(until_next_day(time.time()), abs=5)
    # Another key of the same tenant shares the budget; streaming is refused the same way.
    other = new_key(keys, "budgeted")
    assert_openai_429(chat(client, other, stream=True), "insufficient_quota", "insufficient_quota")

    (report,) = usage(client, auth)["data"]
    assert report["budget"] == {"daily_tokens": 12, "monthly_tokens": None}
    assert report["today"] == {
        "requests": 3,
        "prompt_tokens": 6,
        "completion_tokens": 9,
        "total_tokens": 15,
        "budget_tokens": 12,
        "remaining_tokens": 0,
    }
    assert report["month"]["budget_tokens"] is None and report["month"]["remaining_tokens"] is None
    assert [(d["day"], d["total_tokens"]) for d in report["days"]] == [(utc_day(time.time()), 15)]

    # Raised by an admin: the next request is admitted (the budget is re-read, no restart).
    client.put("/api/tenants/budgeted/budget", json={"daily_tokens": 100}, headers=admin)
    assert chat(client, auth).status_code == 200
    assert usage(client, auth)["data"][0]["today"]["remaining_tokens"] == 100 - 20


def test_a_key_s_model_scope_gives_403_and_charges_nothing(client: TestClient, keys: KeyStore) -> None:
    auth = new_key(keys, "scoped", scopes={"models": ["echo"]})
    resp = chat(client, auth, "shared")
    assert resp.status_code == 403
    err = resp.json()["error"]
    assert err["code"] == "permission_denied" and "'shared'" in err["message"]
    assert chat(client, auth, "echo").status_code == 200
    (report,) = usage(client, auth)["data"]
    assert [m["model"] for m in report["by_model"]] == ["echo"]


def test_streaming_over_the_limit_is_a_real_429(client: TestClient, keys: KeyStore) -> None:
    auth = new_key(keys, "streamer", tpm=1)
    first = chat(client, auth, stream=True)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in first.text
    err = assert_openai_429(chat(client, auth, stream=True), "rate_limit_exceeded", "requests")
    assert "1 tokens per minute" in err["message"]
    # The streamed answer was charged with its real usage once it ended.
    assert usage(client, auth)["data"][0]["today"]["total_tokens"] == TOKENS_PER_CALL


def test_usage_is_the_tenant_s_own_unless_admin(client: TestClient, keys: KeyStore) -> None:
    mine, theirs = new_key(keys, "usage-one", level="read"), new_key(keys, "usage-two", level="read")
    assert chat(client, mine).status_code == 200
    assert chat(client, theirs).status_code == 200
    assert [r["tenant"] for r in usage(client, mine)["data"]] == ["usage-one"]
    refused = client.get("/api/usage", headers=mine, params={"tenant": "usage-two"})
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "tenant"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    everyone = {r["tenant"] for r in usage(client, admin)["data"]}
    assert {"usage-one", "usage-two"} <= everyone
    (named,) = usage(client, admin, tenant="usage-two")["data"]
    assert named["month"]["requests"] == 1
    bad = client.get("/api/usage", headers=admin, params={"month": "2025-13"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "month"
    past = usage(client, admin, month="2001-01")
    assert past["day"] is None and all(r["month"]["requests"] == 0 and r["today"] is None for r in past["data"])


def test_metrics_show_usage_and_refusals(client: TestClient, keys: KeyStore) -> None:
    auth = new_key(keys, "metered", rpm=1)
    assert chat(client, auth).status_code == 200
    assert chat(client, auth).status_code == 429
    text = client.get("/metrics").text
    assert series(text, "datapilot_tokens_total", tenant="metered") == {
        (("kind", "prompt"), ("model", "echo"), ("tenant", "metered")): 2,
        (("kind", "completion"), ("model", "echo"), ("tenant", "metered")): 3,
    }
    assert series(text, "datapilot_rate_limited_total", tenant="metered") == {
        (("reason", "key_rpm"), ("tenant", "metered")): 1
    }
    used = series(text, "datapilot_tenant_tokens_used", tenant="metered")
    assert used == {(("period", "day"), ("tenant", "metered")): 5, (("period", "month"), ("tenant", "metered")): 5}


def series(text: str, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one Prometheus metric whose labels include ``match``, keyed by sorted labels."""
    out = {}
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        pairs = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels)))
        if set(match.items()) <= set(pairs):
            out[pairs] = float(value)
    return out


def test_usage_and_budgets_survive_a_restart(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    with KeyStore.for_home(tmp_path) as store:
        store.set_budget("restarted", daily_tokens=None, monthly_tokens=7)
        _, key = store.create("restarted")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(cfg)) as c:
        assert chat(c, auth).status_code == 200  # 5 of 7
    assert (tmp_path / "usage.db").exists()
    with TestClient(create_app(cfg)) as c:
        assert usage(c, auth)["data"][0]["month"]["total_tokens"] == TOKENS_PER_CALL
        assert chat(c, auth).status_code == 200  # 5 < 7: crosses to 10
        err = assert_openai_429(chat(c, auth), "insufficient_quota", "insufficient_quota")
        assert "monthly budget of 7 tokens" in err["message"]
        assert err["retry_after"] == pytest.approx(until_next_month(time.time()), abs=5)


def test_limits_can_be_turned_off(tmp_path: Path) -> None:
    cfg = settings(tmp_path, enabled=False)
    with KeyStore.for_home(tmp_path) as store:
        _, key = store.create("free", rpm=1)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(cfg)) as c:
        assert [chat(c, auth).status_code for _ in range(3)] == [200, 200, 200]
        resp = c.get("/api/usage", headers=auth)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_available"
    assert not (tmp_path / "usage.db").exists()


# --- the parts, on their own ----------------------------------------------------------------------


def test_a_sliding_window_frees_room_as_its_minute_passes() -> None:
    window = SlidingWindow(window_s=60, resolution_s=1)
    window.add(3, now=100.0)
    window.add(2, now=130.0)
    assert window.used(now=130.0) == 5
    assert window.wait_s(5, now=130.0) == pytest.approx(30.0)  # the first 3 expire at 160
    assert window.wait_s(2, now=130.0, need=1) == pytest.approx(60.0)  # both must go: at 190
    assert window.wait_s(6, now=130.0) == 0
    assert window.used(now=160.0) == 2 and window.used(now=190.0) == 0
    # Additions within a bucket expire with the latest of them, never earlier.
    window.add(1, now=200.0)
    window.add(1, now=200.9)
    assert window.used(now=260.5) == 2 and window.used(now=260.9) == 0


def test_budget_resets_are_at_utc_day_and_month_boundaries() -> None:
    new_year_eve = 1735689600.0 - 10  # 2024-12-31 23:59:50 UTC
    assert utc_day(new_year_eve) == "2024-12-31"
    assert until_next_day(new_year_eve) == pytest.approx(10)
    assert until_next_month(new_year_eve) == pytest.approx(10)
    assert until_next_month(1735689600.0) == pytest.approx(31 * 86400)


def test_a_ledger_writes_in_batches_and_reads_its_sums_back(tmp_path: Path) -> None:
    clock = [1735689600.0 + 3600]  # 2025-01-01 01:00 UTC
    ledger = UsageLedger(tmp_path / "usage.db", clock=lambda: clock[0])
    ledger.charge("acme", "k1", "echo", 2, 3)
    ledger.charge("acme", "k1", "echo", 2, 3)
    assert not (tmp_path / "usage.db").exists()  # nothing written on the request path
    assert ledger.used("acme", "2025-01-01") == 10 and ledger.used("acme", "2025-01") == 10
    ledger.flush()
    clock[0] += 86400
    ledger.charge("acme", None, "echo", 1, 0)
    rows = ledger.rows("2025-01")
    assert [(r.day, r.key_id, r.requests, r.total_tokens) for r in rows] == [
        ("2025-01-01", "k1", 2, 10),
        ("2025-01-02", None, 1, 1),
    ]
    # A second ledger on the same file (a restart, another server) starts from its sums.
    again = UsageLedger(tmp_path / "usage.db", clock=lambda: clock[0])
    assert again.used("acme", "2025-01") == 11 and again.used("acme", "2025-01-02") == 1
    for one in (ledger, again):
        asyncio.run(one.close())


def test_cache_hits_are_served_without_being_charged(tmp_path: Path) -> None:
    cfg = settings(tmp_path, cache={"enabled": True, "embedders": {"default": HASHED}})
    with KeyStore.for_home(tmp_path) as store:
        _, key = store.create("cached", tpm=1)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(cfg)) as c:
        miss = chat(c, auth, temperature=0)
        assert miss.status_code == 200 and miss.headers["x-datapilot-cache"] == "miss"
        hit = chat(c, auth, temperature=0)  # the key's tokens per minute are spent, but the model is not called
        assert hit.status_code == 200 and hit.headers["x-datapilot-cache"] == "hit"
        other = [{"role": "user", "content": "a question the cache has not seen"}]
        assert_openai_429(chat(c, auth, temperature=0, messages=other), "rate_limit_exceeded", "requests")
        assert usage(c, auth)["data"][0]["today"]["requests"] == 1


def test_a_model_defined_at_run_time_has_its_limits_enforced(client: TestClient, keys: KeyStore) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = client.post(
        "/api/models", headers=admin, json={"name": "late", "backend": "scripted", "params": REPLY, "rpm": 1}
    )
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 30
    while client.post("/api/models/late/start", headers=admin).json().get("state") != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    auth = new_key(keys, "late-tenant")
    assert chat(client, auth, model="late").status_code == 200
    refused = chat(client, auth, model="late")
    assert refused.status_code == 429 and "'late'" in refused.json()["error"]["message"]


def test_internal_embeddings_are_not_refused_by_a_key_s_model_scopes(tmp_path: Path) -> None:
    """The cache's embedder is a served model (kind ``datapilot``): a key limited to the chat model still
    gets cached answers, though it may not call the embedding model itself."""
    cfg = settings(
        tmp_path,
        cache={"enabled": True, "embedders": {"default": {"kind": "datapilot", "model": "embed"}}},
    )
    cfg.models.append(ModelConfig(name="embed", backend="scripted", params={"capabilities": ["embedding"]}))
    keys = KeyStore.for_home(tmp_path)
    auth = new_key(keys, "scoped", scopes={"models": ["echo"]})
    with TestClient(standalone_app(cfg)) as c:
        first, second = chat(c, auth, temperature=0), chat(c, auth, temperature=0)
        assert first.status_code == 200 and second.status_code == 200, second.text
        assert second.headers["x-datapilot-cache"] == "hit"
        direct = c.post("/v1/embeddings", headers=auth, json={"model": "embed", "input": "hi"})
        assert direct.status_code == 403 and direct.json()["error"]["code"] == "permission_denied"
    keys.close()

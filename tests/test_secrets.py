"""Secrets at rest: data-source passwords and API keys of models defined through the API are stored
encrypted with the home's key (or DATAPILOT_SECRET_KEY), plain-text rows from before are migrated,
a wrong or missing key is a clear error, and no API answer nor `config show` carries a secret."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from datapilot.core.config import DataSettings, ModelConfig, Settings
from datapilot.core.secrets import ENV_KEY, KEY_FILE, MASK, SecretBox, SecretKeyError, generate_key, mask_secrets
from datapilot.datasource import DataSourceConfig, DataSources, DataSourceStore
from datapilot.models.cluster.host import DefinitionStore
from datapilot.testing import write_config
from tests.test_cli import cli

PASSWORD = "hunter2-Pa55word-xyzzy"
API_KEY = "sk-test-9f8e7d6c5b4a-secret"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


# --- the box ---------------------------------------------------------------------------------------------


def test_key_file_created_on_first_encrypt_with_mode_0600(tmp_path: Path) -> None:
    box = SecretBox.at_home(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()
    token = box.encrypt(PASSWORD)
    assert token.startswith("dpsec1:") and PASSWORD not in token
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert box.encrypt(PASSWORD) != token  # a fresh nonce each time
    assert SecretBox.at_home(tmp_path).decrypt(token) == PASSWORD  # the same key, read from the file
    assert box.decrypt("plain-from-before") == "plain-from-before"
    assert SecretBox.at_home(tmp_path).decrypt(box.encrypt("")) == ""
    assert SecretBox.at_home(tmp_path).decrypt(box.encrypt("口令 ✓")) == "口令 ✓"


def test_env_key_wins_and_no_file_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, generate_key())
    token = SecretBox.at_home(tmp_path).encrypt(PASSWORD)
    assert not (tmp_path / KEY_FILE).exists()
    assert SecretBox(None).decrypt(token) == PASSWORD


def test_wrong_missing_or_bad_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = SecretBox.at_home(tmp_path / "a").encrypt(PASSWORD)
    SecretBox.at_home(tmp_path / "b").encrypt("x")  # another home, another key
    with pytest.raises(SecretKeyError, match=f"cannot be decrypted.*restore the key file.*{ENV_KEY}"):
        SecretBox.at_home(tmp_path / "b").decrypt(token, what="the password")
    with pytest.raises(SecretKeyError, match=f"key file .*secret.key is missing.*{ENV_KEY}"):
        SecretBox.at_home(tmp_path / "empty").decrypt(token)
    assert not (tmp_path / "empty" / KEY_FILE).exists()  # decrypting never makes a key
    with pytest.raises(SecretKeyError, match="damaged"):
        SecretBox.at_home(tmp_path / "a").decrypt("dpsec1:AAAA")
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox.at_home(tmp_path / "a").decrypt(tampered)
    monkeypatch.setenv(ENV_KEY, "not-a-key")
    with pytest.raises(SecretKeyError, match="not 32 bytes"):
        SecretBox.at_home(tmp_path / "a").decrypt(token)


# --- data sources -----------------------------------------------------------------------------------------


def test_datasource_password_encrypted_and_plain_rows_migrated(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = DataSourceStore.at_home(home)
    store.add(DataSourceConfig(name="pg", kind="postgresql", url="postgresql://bob@db/x", password=SecretStr(PASSWORD)))
    got = store.get("pg")
    assert got is not None and got.password is not None and got.password.get_secret_value() == PASSWORD
    store.close()
    assert files_containing(home, PASSWORD) == []

    # A row from before encryption: the password in plain text.
    with sqlite3.connect(home / "metadata.db") as db:
        db.execute(
            "INSERT INTO datasources (name, kind, spec, secret, created_at) VALUES (?, ?, ?, ?, ?)",
            ("old", "postgresql", json.dumps({"url": "postgresql://al@db/y"}), "old-plain-pass", 0.0),
        )
    assert files_containing(home, "old-plain-pass")
    store = DataSourceStore.at_home(home)  # opening it re-saves the row encrypted
    old = store.get("old")
    assert old is not None and old.password is not None and old.password.get_secret_value() == "old-plain-pass"
    store.close()
    with sqlite3.connect(home / "metadata.db") as db:
        (secret,) = db.execute("SELECT secret FROM datasources WHERE name = 'old'").fetchone()
    assert secret.startswith("dpsec1:")
    for leftover in files_containing(home, "old-plain-pass"):  # SQLite may keep the old page in free space
        with sqlite3.connect(leftover) as db:
            db.execute("VACUUM")
    assert files_containing(home, "old-plain-pass") == []

    # Another key: a clear error naming the source and what to do.
    (home / KEY_FILE).write_text(generate_key() + "\n")
    store = DataSourceStore.at_home(home)
    with pytest.raises(SecretKeyError, match=f"password of data source 'pg'.*{ENV_KEY}"):
        store.get("pg")
    store.close()


async def test_sqlite_source_with_a_password_still_connects(tmp_path: Path) -> None:
    db_path = tmp_path / "t.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (42)")
    home = tmp_path / "home"
    sources = DataSources(DataSettings(sample=False), home)
    try:
        await sources.add(DataSourceConfig(name="t", kind="sqlite", url=f"sqlite:///{db_path}", password=PASSWORD))
        result = await (await sources.connector("t")).run("SELECT x FROM t", limit=5, timeout_s=5)
        assert [list(r) for r in result.rows] == [[42]]
    finally:
        await sources.close()
    assert files_containing(home, PASSWORD) == []


# --- model definitions ------------------------------------------------------------------------------------


def test_model_api_key_encrypted_and_plain_rows_migrated(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = DefinitionStore(home / "models.db")
    cfg = ModelConfig(name="up", backend="openai_compat", base_url="http://127.0.0.1:9/v1", api_key=API_KEY)
    store.save(cfg)
    assert [c.api_key.get_secret_value() for c in store.load() if c.api_key] == [API_KEY]
    assert stat.S_IMODE(os.stat(home / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "models.db").st_mode) == 0o600
    store.close()
    assert files_containing(home, API_KEY) == []

    with sqlite3.connect(home / "models.db") as db:
        old = cfg.model_dump(mode="json") | {"name": "old", "api_key": "sk-old-plain-key"}
        db.execute("INSERT INTO models VALUES (?, ?)", ("old", json.dumps(old)))
    store = DefinitionStore(home / "models.db")
    loaded = {c.name: c.api_key.get_secret_value() for c in store.load() if c.api_key}
    assert loaded == {"up": API_KEY, "old": "sk-old-plain-key"}
    row = store._db.execute("SELECT config FROM models WHERE name = 'old'").fetchone()[0]
    assert json.loads(row)["api_key"].startswith("dpsec1:")
    store.close()

    (home / KEY_FILE).unlink()
    store = DefinitionStore(home / "models.db")
    with pytest.raises(SecretKeyError, match=f"secret.key is missing.*{ENV_KEY}"):
        store.load()
    store.close()


# --- through the API --------------------------------------------------------------------------------------


def test_api_never_returns_or_stores_secrets_in_plain_text(tmp_path: Path) -> None:
    from datapilot.server.roles import standalone_app

    home = tmp_path / "home"
    db_path = tmp_path / "t.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
    settings = Settings(home=home, models=[ModelConfig(name="a", backend="scripted")], data=DataSettings(sample=False))
    app = standalone_app(settings)
    answers: list[str] = []
    with TestClient(app) as client:
        added = client.post(
            "/api/datasources",
            json={"name": "t", "kind": "sqlite", "url": f"sqlite:///{db_path}", "password": PASSWORD},
        )
        assert added.status_code == 200, added.text
        defined = client.post(
            "/api/models",
            json={"name": "up", "backend": "openai_compat", "base_url": "http://127.0.0.1:9/v1", "api_key": API_KEY},
        )
        assert defined.status_code == 201, defined.text
        tested = client.post("/api/datasources/t/test")
        assert tested.status_code == 200, tested.text
        for resp in (
            added,
            defined,
            tested,
            client.get("/api/datasources"),
            client.get("/api/datasources/t"),
            client.get("/api/models"),
            client.get("/v1/models"),
        ):
            answers.append(resp.text)
        assert client.get("/api/datasources/t").json()["password"] in ("***", MASK)
    for text in answers:
        assert PASSWORD not in text and API_KEY not in text
    assert files_containing(home, PASSWORD) == []
    assert files_containing(home, API_KEY) == []


# --- config show ------------------------------------------------------------------------------------------


def test_mask_secrets_in_a_settings_dump() -> None:
    dump = {
        "server": {"api_keys": ["k1", "k2"], "port": 1},
        "models": [{"api_key": "sk-1", "params": {"access_token": "t", "max_tokens": 5}, "base_url": "http://h/v1"}],
        "data": {"metadata_url": "postgresql://bob:pw123@db:5432/meta", "window_tokens": 64},
        "cache": {"store": {"milvus_token": "mt", "sql_url": "sqlite:///x.db"}},
        "empty": {"api_key": None},
    }
    masked = mask_secrets(dump)
    text = json.dumps(masked)
    for secret in ("k1", "k2", "sk-1", '"t"', "pw123", "mt"):
        assert secret not in text
    assert masked["data"]["metadata_url"] == f"postgresql://bob:{MASK}@db:5432/meta"  # type: ignore[index]
    assert masked["models"][0]["params"]["max_tokens"] == 5  # type: ignore[index]
    assert masked["models"][0]["base_url"] == "http://h/v1"  # type: ignore[index]
    assert masked["cache"]["store"]["sql_url"] == "sqlite:///x.db"  # type: ignore[index]
    assert masked["empty"]["api_key"] is None  # type: ignore[index]


def test_config_show_masks_keys_and_url_passwords(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        [{"name": "p", "backend": "openai_compat", "base_url": "http://127.0.0.1:9/v1", "api_key": API_KEY}],
        data={"metadata_url": f"postgresql://bob:{PASSWORD}@127.0.0.1:5432/meta"},
        security={"outbound_deny": ["10.9.0.0/16"]},
    )
    done = cli("config", "show", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert API_KEY not in done.stdout and PASSWORD not in done.stdout
    shown = json.loads(done.stdout)
    assert shown["data"]["metadata_url"] == f"postgresql://bob:{MASK}@127.0.0.1:5432/meta"
    assert shown["security"]["outbound_deny"] == ["10.9.0.0/16"]

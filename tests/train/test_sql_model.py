"""A data source names the model that answers its questions (``sql_model``, set by ``datapilot train
text2sql``): chat over the source uses it unless the request names another, and a model that is not
served falls back to the default."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from datapilot.core.config import ModelConfig, Settings
from datapilot.datasource import build_sample_database
from datapilot.server.app import create_app


def _scripted(name: str, sql: str) -> ModelConfig:
    return ModelConfig(name=name, backend="scripted", params={"replies": [sql, "Done."]})


def test_chat_over_a_source_uses_its_sql_model(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        models=[
            _scripted("general", "SELECT category, COUNT(*) FROM products GROUP BY category"),
            _scripted("trained", "SELECT COUNT(*) FROM products"),
        ],
    )
    db = build_sample_database(tmp_path / "shop.sqlite")
    copy = tmp_path / "other.sqlite"
    shutil.copyfile(db, copy)
    with TestClient(create_app(settings)) as client:
        added = client.post("/api/datasources", json={"name": "shop", "kind": "sqlite", "path": str(db),
                                                      "sql_model": "trained"})  # fmt: skip
        assert added.status_code == 200, added.text
        assert added.json()["sql_model"] == "trained"
        ghost = {"name": "ghost", "kind": "sqlite", "path": str(copy), "sql_model": "not-served"}
        assert client.post("/api/datasources", json=ghost).status_code == 200

        def sql(**body: str) -> str:
            reply = client.post("/api/chat", json={"scene": "data", "question": "How many products?", **body})
            assert reply.status_code == 200, reply.text
            return str(reply.json()["sql"])

        assert sql(datasource="shop") == "SELECT COUNT(*) FROM products"  # the source's own model
        assert sql(datasource="shop", model="general").startswith("SELECT category")  # the request wins
        assert sql(datasource="ghost").startswith("SELECT category")  # not served: the default model
        assert client.get("/api/datasources/shop").json()["sql_model"] == "trained"

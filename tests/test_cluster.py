"""SMMF in one process: controller registry, worker agents, routing, failover (scripted models)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datapilot.core import Message, ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import ModelNotFoundError, ModelNotReadyError, UpstreamError
from datapilot.models import ModelManager
from datapilot.models.cluster.agent import WorkerAgent
from datapilot.models.cluster.client import LocalControllerClient
from datapilot.models.cluster.controller import Controller
from datapilot.models.cluster.registry import InstanceInfo, Registry, SQLiteRegistryStore
from datapilot.models.cluster.router import RoutingClient

LONG = " ".join(f"w{i}" for i in range(20))


class Cluster:
    def __init__(self, tmp: Path, workers: dict[str, list[ModelConfig]], timeout: float = 1.0) -> None:
        self.controller = Controller(Registry(heartbeat_timeout=timeout))
        self.managers = {wid: ModelManager(models, tmp) for wid, models in workers.items()}
        self.agents = {
            wid: WorkerAgent(m, LocalControllerClient(self.controller), wid, None, interval=0.1)
            for wid, m in self.managers.items()
        }
        self.router = RoutingClient(LocalControllerClient(self.controller), self.managers, poll_wait=0.2)

    async def __aenter__(self) -> Cluster:
        await self.controller.start()
        for m in self.managers.values():
            await m.start()
        for a in self.agents.values():
            await a.start()
        await self.router.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.router.close()
        for a in self.agents.values():
            await a.close()
        for m in self.managers.values():
            await m.close()
        await self.controller.close()

    def route(self, worker: str, model: str = "m"):  # type: ignore[no-untyped-def]
        return self.router.routes[f"{worker}/{model}"]


def ask(model: str = "m", text: str = "hi", **params: object) -> ModelRequest:
    return ModelRequest(model=model, messages=[Message("user", text)], params=SamplingParams(**params))


def scripted(name: str = "m", **params: object) -> ModelConfig:
    return ModelConfig(name=name, backend="scripted", params=params)


async def drain(stream: AsyncIterator[object]) -> int:
    return sum([1 async for _ in stream])


async def test_least_in_flight_spreads_concurrent_requests(tmp_path: Path) -> None:
    slow = scripted(replies=[LONG], token_delay_s=0.01)
    async with Cluster(tmp_path, {"w0": [slow], "w1": [slow]}) as c:
        await c.router.wait_for("m", instances=2)
        await asyncio.gather(*(c.router.generate(ask()) for _ in range(6)))
        assert c.route("w0").served == 3 and c.route("w1").served == 3
        # A busy instance is avoided: hold one stream open on w0 and the next requests go to w1.
        c.route("w1").in_flight += 5
        held = c.router.stream(ask())
        await held.__anext__()
        c.route("w1").in_flight -= 5
        assert c.route("w0").in_flight == 1
        for _ in range(3):
            await c.router.generate(ask())
        assert c.route("w1").served == 6
        await held.aclose()  # type: ignore[attr-defined]


async def test_failover_before_the_first_token(tmp_path: Path) -> None:
    async with Cluster(tmp_path, {"w0": [scripted()], "w1": [scripted()]}) as c:
        await c.router.wait_for("m", instances=2)
        await c.managers["w0"].workers["m"].stop()  # w0's model vanished; its registration has not caught up
        outs = [await c.router.generate(ask(text=f"q{i}")) for i in range(4)]
        assert [o.text for o in outs] == [f"You said: q{i}" for i in range(4)]
        chunks = [ch async for ch in c.router.stream(ask(text="streamed"))]
        assert "".join(ch.text for ch in chunks) == "You said: streamed"
        assert c.route("w1").served == 5 and c.route("w0").suspect_until > time.monotonic()


async def test_failure_mid_answer(tmp_path: Path) -> None:
    workers = {"w0": [scripted(replies=[LONG], fail_after_tokens=3)], "w1": [scripted(replies=[LONG])]}
    async with Cluster(tmp_path, workers) as c:
        await c.router.wait_for("m", instances=2)
        c.route("w1").in_flight += 1  # make w0 the first choice
        # Streaming: tokens already reached the client, so the request ends with a clear error.
        stream = c.router.stream(ask())
        got = []
        with pytest.raises(UpstreamError, match="failed after 3 chunk"):
            async for ch in stream:
                got.append(ch.text)
        assert "".join(got) == "w0 w1 w2"
        # Whole answers: nothing was sent yet, so the answer is produced again on the other instance.
        c.route("w0").suspect_until = 0.0
        out = await c.router.generate(ask())
        assert out.text == LONG and out.finish_reason == "stop"
        c.route("w1").in_flight -= 1


async def test_unknown_failed_and_silent_instances(tmp_path: Path) -> None:
    workers = {"w0": [scripted(), scripted("broken", fail_load="no GPU memory (test)")], "w1": [scripted()]}
    async with Cluster(tmp_path, workers, timeout=0.5) as c:
        await c.router.wait_for("m", instances=2)
        with pytest.raises(ModelNotFoundError, match="available models: broken, m"):
            await c.router.generate(ask("nope"))
        with pytest.raises(ModelNotReadyError, match="no GPU memory"):
            await c.router.generate(ask("broken"))
        models = {m.name: m for m in await c.router.models()}
        assert models["m"].status == "ready" and models["broken"].status == "failed"
        # w1 goes silent (its process hangs or dies): it leaves the table within the timeout.
        task = c.agents["w1"]._task
        assert task is not None
        task.cancel()
        deadline = time.monotonic() + 3
        while "w1/m" in c.router.routes:
            assert time.monotonic() < deadline, "a silent instance stayed routable"
            await asyncio.sleep(0.05)
        assert (await c.router.generate(ask())).text == "You said: hi"
        # ... and comes back by itself once it beats again.
        c.agents["w1"]._task = asyncio.create_task(c.agents["w1"]._loop())
        await c.router.wait_for("m", instances=2, within_s=3)


async def test_controller_restart_recovers_registry(tmp_path: Path) -> None:
    store = SQLiteRegistryStore(tmp_path / "controller.db")
    reg = Registry(heartbeat_timeout=5, store=store)
    reg.register(InstanceInfo("w0/m", "m", "w0", "http://127.0.0.1:1/v1", ["chat"]))
    reg.register(InstanceInfo("w1/m", "m", "w1", "http://127.0.0.1:2/v1", ["chat"]))
    reg.deregister(["w1/m"])
    store.close()
    store = SQLiteRegistryStore(tmp_path / "controller.db")
    recovered = Registry(heartbeat_timeout=5, store=store)
    assert [i.instance_id for i, live in recovered.all()] == ["w0/m"]
    assert recovered.live() == []  # known, but unproven until the worker beats again
    assert recovered.heartbeat(["w0/m", "w9/m"]) == ["w9/m"]
    assert [i.url for i in recovered.live()] == ["http://127.0.0.1:1/v1"]
    store.close()


async def test_worker_registers_again_with_a_new_controller(tmp_path: Path) -> None:
    manager = ModelManager([scripted()], tmp_path)
    await manager.start()
    first = Controller(Registry(5))
    agent = WorkerAgent(manager, LocalControllerClient(first), "w0", "http://127.0.0.1:9/v1", interval=0.05)
    await agent.start()
    assert [i.instance_id for i in first.registry.live()] == ["w0/m"]
    second = Controller(Registry(5))  # the controller restarted with an empty memory
    agent.controller = LocalControllerClient(second)
    deadline = time.monotonic() + 2
    while not second.registry.live():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert second.registry.live()[0].url == "http://127.0.0.1:9/v1"
    await agent.close()
    assert second.registry.live() == []
    await manager.close()


async def test_long_poll_wakes_on_change(tmp_path: Path) -> None:
    controller = Controller(Registry(5))
    version, _ = await controller.table()
    waiter = asyncio.create_task(controller.table(after=version, wait=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    started = time.monotonic()
    await controller.register(InstanceInfo("w0/m", "m", "w0"))
    new_version, live = await waiter
    assert new_version > version and [i.instance_id for i in live] == ["w0/m"]
    assert time.monotonic() - started < 1


async def test_an_instance_with_a_free_slot_is_preferred_to_a_queue(tmp_path: Path) -> None:
    """Least in flight for its slots: a batching instance (``parallel`` 4) with 3 running still has a slot."""
    batched, single = scripted(parallel=4), scripted()
    async with Cluster(tmp_path, {"w0": [batched], "w1": [single]}) as c:
        await c.router.wait_for("m", instances=2)
        assert c.route("w0").info.slots == 4 and c.route("w1").info.slots == 1
        c.route("w0").in_flight, c.route("w1").in_flight = 3, 1
        assert c.router._pick("m", "chat", set()).info.worker_id == "w0"
        c.route("w0").in_flight = 4  # full: now both queue, and the one-slot instance's queue is as short
        assert c.router._pick("m", "chat", set()).info.worker_id in ("w0", "w1")
        c.route("w0").in_flight = 5
        assert c.router._pick("m", "chat", set()).info.worker_id == "w1"

"""The Ray runtime: each model instance is a Ray actor, placed by Ray on any node with its resources.

``RayModels`` is to Ray what ``ModelHost`` and the worker agents are to local processes. It creates
one actor per instance (``ModelActor``, declared with the model's ``resources``: CPUs, GPUs, memory,
custom resources; spread over the nodes or packed), loads the model in it, and keeps the controller's
registry in step with Ray's view: every ``health_interval_s`` each actor is asked for its state, and
one that does not answer (its process or node died) is marked down and leaves routing. Ray restarts a
dead actor per ``max_restarts``; the restarted actor loads its model again and comes back into
routing. The API server reaches instances through their actor handles (``RayInstance``, an
``LLMClient``), so the router keeps least-in-flight choice and failover before the first token.

Actors, not Ray Serve deployments: DataPilot already has the API server, the router and the
measurements that Serve would add a second copy of (its own HTTP proxy and request router), and a
plain actor call is the cheapest path Ray offers (an instant model answers through it in about a
millisecond). Scaling is ``datapilot model start/stop`` (one actor more or less) or ``instances``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from datapilot.core.aio import stop_task
from datapilot.core.config import ModelConfig, RaySettings
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelOutput, ModelRequest, RerankOutput
from datapilot.models.cluster.controller import Controller
from datapilot.models.cluster.host import DefinitionStore, ModelDefinitions
from datapilot.models.cluster.registry import InstanceInfo
from datapilot.models.manager import ModelManager, ModelState
from datapilot.models.structured import advertised
from datapilot.runtime import connect, ray_module, unwrap_ray_error

log = logging.getLogger("datapilot.ray")


class ModelActor:
    """One instance of one model, in a Ray worker process (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, config: ModelConfig, home: str) -> None:
        self.config = config  # the object itself: a JSON dump would mask its secrets (api_key) as ****
        self.manager = ModelManager([self.config], Path(home).expanduser())
        self._loading: asyncio.Task[None] | None = None
        self._streams: dict[str, tuple[asyncio.Queue[tuple[str, Any]], asyncio.Task[None]]] = {}

    async def load(self) -> dict[str, Any]:
        if self._loading is None:
            self._loading = asyncio.ensure_future(self.manager.start())
        await asyncio.shield(self._loading)
        return await self.status()

    async def status(self) -> dict[str, Any]:
        ray = ray_module()
        worker = self.manager.workers[self.config.name]
        state = worker.state.value if self._loading is not None else "pending"
        caps = sorted(advertised(worker.backend.capabilities)) if worker.backend is not None else []
        return {
            "state": state,
            "error": worker.error,
            "capabilities": caps,
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "batch": self.manager.batch_stats().get(self.config.name),
        }

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return await self.manager.generate(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[list[ModelChunk]]:
        """The answer in batches: each yield (one Ray object) carries every chunk ready by then, so a
        fast model costs a few objects an answer rather than one a token."""
        sid = await self.open_stream(request)
        try:
            while True:
                chunks, done, error = await self.read_stream(sid, wait_s=3600.0)
                if chunks:
                    yield chunks
                if error is not None:
                    raise error
                if done:
                    return
        finally:  # cancelled (the client went away): stop generating, which frees the model's slot
            await self.close_stream(sid)

    # Ray Client (``ray://``) has no streaming actor methods: a stream is opened, then read in batches.

    async def open_stream(self, request: ModelRequest) -> str:
        sid = uuid.uuid4().hex
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for chunk in self.manager.unmeasured_stream(request):
                    queue.put_nowait(("chunk", chunk))
                queue.put_nowait(("end", None))
            except Exception as exc:  # handed to the reader, who raises it
                queue.put_nowait(("error", exc))

        self._streams[sid] = (queue, asyncio.create_task(pump()))
        return sid

    async def read_stream(self, sid: str, wait_s: float = 5.0) -> tuple[list[ModelChunk], bool, Exception | None]:
        """What the stream has produced since the last read (waiting up to ``wait_s`` for something):
        its chunks, whether it ended, and the error it ended with."""
        queue, _ = self._streams[sid]
        items: list[tuple[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            items.append(await asyncio.wait_for(queue.get(), wait_s))
        while not queue.empty():
            items.append(queue.get_nowait())
        chunks = [value for kind, value in items if kind == "chunk"]
        ends = [(kind, value) for kind, value in items if kind != "chunk"]
        if ends:
            self._streams.pop(sid, None)
            return chunks, True, ends[0][1]
        return chunks, False, None

    async def close_stream(self, sid: str) -> None:
        entry = self._streams.pop(sid, None)
        if entry is not None:
            await stop_task(entry[1])

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        return await self.manager.embed(model, texts)

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        return await self.manager.rerank(model, query, documents)

    async def close(self) -> None:
        await self.manager.close()


class RayInstance:
    """The API server's handle on one model actor: an ``LLMClient`` the router sends requests to."""

    def __init__(self, worker_id: str, config: ModelConfig, handle: Any) -> None:
        self.worker_id, self.config, self.handle = worker_id, config, handle
        self.status: dict[str, Any] = {"state": "loading"}
        self.loading: asyncio.Task[None] | None = None
        self.stopped = False
        self.published: dict[str, Any] = {}

    @property
    def what(self) -> str:
        return f"instance {self.worker_id} of model {self.config.name!r}"

    def info(self) -> InstanceInfo:
        s = self.status
        state = "stopped" if self.stopped else s.get("state", "loading")
        if state == "pending":
            state = "loading"
        node = f"{s['node_ip']} ({str(s['node_id'])[:8]})" if s.get("node_id") else None
        return InstanceInfo(
            instance_id=f"{self.worker_id}/{self.config.name}",
            model=self.config.name,
            worker_id=self.worker_id,
            capabilities=list(s.get("capabilities") or []),
            state=state,
            error=s.get("error"),
            slots=max(1, int(self.config.params.get("parallel", 1))),
            node=node,
        )

    async def _get(self, ref: Any) -> Any:
        try:
            return await ref
        except Exception as exc:
            raise unwrap_ray_error(exc, self.what) from exc

    async def generate(self, request: ModelRequest) -> ModelOutput:
        out: ModelOutput = await self._get(self.handle.generate.remote(request))
        return out

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        ray = ray_module()
        if ray.util.client.ray.is_connected():  # Ray Client: no streaming actor methods
            async for chunk in self._polled_stream(request):
                yield chunk
            return
        chunks = self.handle.stream.options(num_returns="streaming").remote(request)
        done = False
        try:
            while True:
                try:
                    ref = await chunks.__anext__()
                except StopAsyncIteration:
                    done = True
                    return
                except Exception as exc:
                    done = True
                    raise unwrap_ray_error(exc, self.what) from exc
                for chunk in await self._get(ref):
                    yield chunk
        finally:
            if not done:  # the reader went away: stop generating in the actor and free its slot
                with contextlib.suppress(Exception):
                    ray.cancel(chunks)

    async def _polled_stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        sid = await self._get(self.handle.open_stream.remote(request))
        done = False
        try:
            while not done:
                chunks, done, error = await self._get(self.handle.read_stream.remote(sid))
                for chunk in chunks:
                    yield chunk
                if error is not None:
                    raise error
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    await self.handle.close_stream.remote(sid)

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        out: EmbeddingOutput = await self._get(self.handle.embed.remote(model, texts))
        return out

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        out: RerankOutput = await self._get(self.handle.rerank.remote(model, query, documents))
        return out

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        batch = self.status.get("batch")
        return {self.config.name: batch} if batch else {}


class RayModels(ModelDefinitions):
    """Model instances as Ray actors; the controller's registry follows Ray's view of them.

    ``instances`` is shared with the router (``RoutingClient.local_workers``): an actor added here is
    routable as soon as it is registered ready. Also the model lifecycle of ``/api/models``
    (``datapilot model start/stop/restart``), like ``ModelHost`` for local processes."""

    def __init__(
        self,
        settings: RaySettings,
        controller: Controller,
        configured: list[ModelConfig],
        store: DefinitionStore | None,
        home: Path,
    ) -> None:
        super().__init__(configured, store)
        self.settings, self.controller, self.home = settings, controller, home
        self.instances: dict[str, RayInstance] = {}
        self._ids = itertools.count()
        # Actor names are unique in a Ray namespace: several API servers on one cluster (replicas, a
        # rolling update) each name theirs with their own prefix.
        self._prefix = uuid.uuid4().hex[:6]
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._actor_class: Any = None
        self.cluster: dict[str, Any] = {}

    # -- start-up and shutdown ------------------------------------------------------------------

    async def launch(self) -> None:
        """Connect to Ray and place every enabled model's instances (loading goes on in the background)."""
        s = self.settings
        wanted = [cfg for cfg in [*self.configured.values(), *self.defined.values()] if cfg.enabled]
        cpus = s.num_cpus
        if s.address is None and cpus is None:
            # A local Ray for this server is one machine: give it the CPUs its instances ask for, so a
            # small machine places them all (oversubscribed) instead of leaving some pending forever.
            asked = sum(cfg.resources.num_cpus * cfg.instances for cfg in wanted)
            cpus = max(os.cpu_count() or 1, math.ceil(asked))
        self.cluster = await asyncio.to_thread(connect, s.address, s.namespace, cpus)
        ray = ray_module()
        self._actor_class = ray.remote(ModelActor)
        for cfg in wanted:
            for _ in range(cfg.instances):
                self._spawn(cfg)
        self._watch = asyncio.create_task(self._watch_loop())

    async def wait_loaded(self, within_s: float) -> list[RayInstance]:
        """Until every instance has loaded or failed, or ``within_s`` passed; returns those still loading
        (waiting for a node with their resources, say): they join routing when they are ready."""
        tasks = [i.loading for i in self.instances.values() if i.loading is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=within_s)
        return [i for i in self.instances.values() if i.loading is not None and not i.loading.done()]

    async def close(self) -> None:
        await stop_task(self._watch)
        ray = ray_module()
        for inst in list(self.instances.values()):
            await stop_task(inst.loading)
            with contextlib.suppress(Exception):
                ray.kill(inst.handle, no_restart=True)
        self.instances.clear()
        if self.store is not None:
            self.store.close()

    # -- placing and watching actors --------------------------------------------------------------

    def _spawn(self, cfg: ModelConfig) -> RayInstance:
        r = cfg.resources
        wid = f"ray-{next(self._ids)}"
        options: dict[str, Any] = {
            "name": f"datapilot/{cfg.name}/{self._prefix}-{wid}",
            "num_cpus": r.num_cpus,
            "num_gpus": r.num_gpus,
            "max_restarts": self.settings.max_restarts,
            "max_task_retries": 0,  # a request is retried on another instance by the router, not here
            "max_concurrency": 1000,
        }
        if r.memory_mb:
            options["memory"] = r.memory_mb * 1024 * 1024
        if r.custom:
            options["resources"] = dict(r.custom)
        if self.settings.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        handle = self._actor_class.options(**options).remote(cfg, str(self.home))
        inst = self.instances[wid] = RayInstance(wid, cfg, handle)
        inst.loading = asyncio.create_task(self._load(inst))
        return inst

    async def _publish(self, inst: RayInstance) -> None:
        """Register the instance when what the router needs to know changed; otherwise a heartbeat."""
        info = inst.info()
        seen = {k: v for k, v in info.to_dict().items() if k not in ("registered_at", "last_heartbeat")}
        if seen != inst.published:
            inst.published = seen
            await self.controller.register(info)
        else:
            await self.controller.heartbeat([info.instance_id], {})

    async def _load(self, inst: RayInstance) -> None:
        await self._publish(inst)
        try:
            inst.status = await asyncio.wait_for(inst._get(inst.handle.load.remote()), self.settings.load_timeout_s)
        except Exception as exc:  # placement or loading failed: the instance says why, and is not routed to
            inst.status = {**inst.status, "state": ModelState.FAILED.value, "error": str(exc) or type(exc).__name__}
            log.warning("%s failed to load: %s", inst.what, exc)
        await self._publish(inst)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await asyncio.gather(*(self._check(i) for i in list(self.instances.values()) if not i.stopped))

    async def _check(self, inst: RayInstance) -> None:
        if inst.loading is not None and not inst.loading.done():
            await self._publish(inst)
            return
        try:
            status = await asyncio.wait_for(inst._get(inst.handle.status.remote()), self.settings.call_timeout_s)
        except Exception as exc:  # its process or node is gone (Ray may be restarting it), or it hangs
            down = "down" if "restart" in str(exc) or isinstance(exc, TimeoutError) else "failed"
            if inst.status.get("state") != down:
                log.warning("%s is %s: %s", inst.what, down, exc)
            inst.status = {**inst.status, "state": down, "error": str(exc) or type(exc).__name__, "batch": None}
        else:
            inst.status = status
            if status["state"] == "pending":  # Ray restarted the actor: load the model again
                log.info("%s was restarted by Ray on %s; loading its model", inst.what, status.get("node_ip"))
                inst.loading = asyncio.create_task(self._load(inst))
                return
        await self._publish(inst)

    # -- the model lifecycle (``/api/models``) ----------------------------------------------------------

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name in self.names():
            cfg = self.definition(name)
            instances = []
            for wid, inst in self.instances.items():
                if inst.config.name == name:
                    info = inst.info()
                    error, pid = inst.status.get("error"), inst.status.get("pid")
                    instances.append(
                        {"worker": wid, "state": info.state, "error": error, "node": info.node, "pid": pid}
                    )
            source = "api" if name in self.defined else "config"
            out.append({"name": name, "backend": cfg.backend, "source": source, "instances": instances})
        return out

    def state_of(self, worker: str, name: str) -> tuple[str, str | None]:
        inst = self.instances[worker]
        return inst.info().state, inst.status.get("error")

    async def start(self, name: str) -> str:
        """One more actor for ``name``, placed by Ray; returns once it has loaded (or failed)."""
        cfg = self.definition(name)
        async with self._lock:
            inst = self._spawn(cfg)
        if inst.loading is not None:
            await inst.loading
        return inst.worker_id

    async def stop(self, name: str, unload: bool = False) -> int:
        """Kill every actor of ``name`` (no restart); returns how many ran."""
        self.definition(name)
        ray = ray_module()
        async with self._lock:
            victims = [i for i in self.instances.values() if i.config.name == name]
            for inst in victims:
                inst.stopped = True
                await stop_task(inst.loading)
                await self.controller.deregister([inst.info().instance_id])
                del self.instances[inst.worker_id]
                with contextlib.suppress(Exception):
                    ray.kill(inst.handle, no_restart=True)
        return len(victims)

    async def restart(self, name: str) -> int:
        count = max(1, await self.stop(name))
        for _ in range(count):
            await self.start(name)
        return count

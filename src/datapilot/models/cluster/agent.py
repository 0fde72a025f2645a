"""The worker's side of the cluster: register its model instances, then keep them alive.

If the controller restarts and forgets an instance, the next heartbeat learns it and registers it
again; if the controller is unreachable, the agent keeps trying without stopping the worker.
"""

from __future__ import annotations

import asyncio
import logging

from datapilot.core.aio import stop_task
from datapilot.core.errors import DataPilotError
from datapilot.models.cluster.client import ControllerClient
from datapilot.models.cluster.registry import InstanceInfo
from datapilot.models.manager import ModelManager, ModelWorker
from datapilot.models.structured import advertised

log = logging.getLogger("datapilot.worker")


class WorkerAgent:
    def __init__(
        self,
        manager: ModelManager,
        controller: ControllerClient,
        worker_id: str,
        url: str | None = None,
        interval: float = 2.0,
    ) -> None:
        self.manager = manager
        self.controller = controller
        self.worker_id = worker_id
        self.url = url
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._registered: set[str] = set()

    def instance_id(self, model: str) -> str:
        return f"{self.worker_id}/{model}"

    def _info(self, w: ModelWorker) -> InstanceInfo:
        caps = sorted(advertised(w.backend.capabilities)) if w.backend is not None else []
        slots = max(1, int(w.config.params.get("parallel", 1)))
        return InstanceInfo(
            self.instance_id(w.name), w.name, self.worker_id, self.url, caps, w.state.value, w.error, slots=slots
        )

    def _by_instance(self) -> dict[str, ModelWorker]:
        return {self.instance_id(w.name): w for w in self.manager.workers.values()}

    async def register_all(self) -> None:
        for w in self.manager.workers.values():
            await self._register(w)

    async def _register(self, w: ModelWorker) -> None:
        info = self._info(w)
        await self.controller.register(info)
        self._registered.add(info.instance_id)

    async def start(self) -> None:
        try:
            await self.register_all()
        except DataPilotError as exc:
            log.warning("could not register with the controller yet (%s); retrying in the background", exc)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except DataPilotError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def beat(self) -> None:
        """Heartbeat; also registers models started and deregisters models removed since the last one."""
        workers = self._by_instance()
        gone = sorted(self._registered - set(workers))
        if gone:
            await self.controller.deregister(gone)
            self._registered -= set(gone)
        states = {iid: (w.state.value, w.error) for iid, w in workers.items()}
        unknown = await self.controller.heartbeat(list(workers), states)
        for iid in unknown:
            if iid in self._registered:
                log.info("controller does not know %s (it restarted?); registering again", iid)
            await self._register(workers[iid])

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        try:
            await self.controller.deregister(sorted(self._registered | set(self._by_instance())))
            self._registered.clear()
        except DataPilotError as exc:
            log.warning("could not deregister: %s", exc)

"""How workers and API servers reach the controller: in-process, or over HTTP."""

from __future__ import annotations

from typing import Protocol

import httpx

from datapilot.core.errors import UpstreamError
from datapilot.models.cluster.controller import Controller
from datapilot.models.cluster.registry import InstanceInfo


class ControllerClient(Protocol):
    async def register(self, info: InstanceInfo) -> None: ...

    async def heartbeat(self, instance_ids: list[str], states: dict[str, tuple[str, str | None]]) -> list[str]: ...

    async def deregister(self, instance_ids: list[str]) -> None: ...

    async def table(self, after: int | None = None, wait: float = 0.0) -> tuple[int, list[InstanceInfo]]: ...

    async def aclose(self) -> None: ...


class LocalControllerClient:
    """The all-in-one server's path: the same calls, without the network."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    async def register(self, info: InstanceInfo) -> None:
        await self.controller.register(info)

    async def heartbeat(self, instance_ids: list[str], states: dict[str, tuple[str, str | None]]) -> list[str]:
        return await self.controller.heartbeat(instance_ids, states)

    async def deregister(self, instance_ids: list[str]) -> None:
        await self.controller.deregister(instance_ids)

    async def table(self, after: int | None = None, wait: float = 0.0) -> tuple[int, list[InstanceInfo]]:
        return await self.controller.table(after, wait)

    async def aclose(self) -> None:
        return None


class HttpControllerClient:
    def __init__(self, url: str, timeout: float = 5.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(timeout), headers=headers)

    async def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        try:
            resp = await self._http.post(f"/api/controller/{path}", json=body)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise UpstreamError(f"controller {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        data: dict[str, object] = resp.json()
        return data

    async def register(self, info: InstanceInfo) -> None:
        await self._post("register", info.to_dict())

    async def heartbeat(self, instance_ids: list[str], states: dict[str, tuple[str, str | None]]) -> list[str]:
        data = await self._post("heartbeat", {"instance_ids": instance_ids, "states": states})
        unknown = data.get("unknown")
        return [str(u) for u in unknown] if isinstance(unknown, list) else []

    async def deregister(self, instance_ids: list[str]) -> None:
        await self._post("deregister", {"instance_ids": instance_ids})

    async def table(self, after: int | None = None, wait: float = 0.0) -> tuple[int, list[InstanceInfo]]:
        params: dict[str, str] = {"wait": str(wait)}
        if after is not None:
            params["after"] = str(after)
        try:
            resp = await self._http.get("/api/controller/instances", params=params, timeout=wait + 5.0)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise UpstreamError(f"controller {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        data = resp.json()
        return int(data["version"]), [InstanceInfo.from_dict(i) for i in data["instances"]]

    async def aclose(self) -> None:
        await self._http.aclose()

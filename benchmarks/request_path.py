"""The path of one chat-with-data request: which DataPilot modules it runs through, and how often it
crosses from one layer to another, traced with ``sys.setprofile`` on the ``data`` scene (zero-cost
model, sample database, one warm call so no first-call loading is counted).

It prints the flow's operators in order (what the request does), the modules entered, and the layer
crossings: consecutive DataPilot calls whose top-level packages differ (``apps`` -> ``text2sql``...).

    .venv/bin/python benchmarks/request_path.py
"""

from __future__ import annotations

import asyncio
import runpy
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from datapilot.apps import ChatContext, SceneRequest, scene_service
from datapilot.core.config import DataSettings
from datapilot.datasource import DataSources

SRC = str(Path(__file__).resolve().parents[1] / "src" / "datapilot")


def _module(frame: FrameType) -> str | None:
    path = frame.f_code.co_filename
    if not path.startswith(SRC):
        return None
    return "datapilot" + path[len(SRC) :].removesuffix(".py").replace("/", ".").removesuffix(".__init__")


async def trace() -> dict[str, Any]:
    fixed = runpy.run_path(str(Path(__file__).with_name("scene_flow.py")), run_name="not_main")["FixedModel"]
    with tempfile.TemporaryDirectory() as home:
        sources = DataSources(DataSettings(), Path(home))
        ctx = ChatContext(fixed(), "fixed", sources, DataSettings())
        request = SceneRequest("How many customers per segment?")
        service = scene_service()
        try:
            async for _ in service.events("data", ctx, request):  # warm: schema, linker, database
                pass
            modules: Counter[str] = Counter()
            crossings: Counter[tuple[str, str]] = Counter()
            last: list[str] = []

            def profile(frame: FrameType, event: str, _: Any) -> None:
                if event != "call":
                    return
                mod = _module(frame)
                if mod is None:
                    return
                modules[mod] += 1
                layer = mod.split(".")[1]
                if last and last[0] != layer:
                    crossings[(last[0], layer)] += 1
                last[:] = [layer]

            sys.setprofile(profile)
            try:
                async for _ in service.events("data", ctx, request):
                    pass
            finally:
                sys.setprofile(None)
        finally:
            await sources.close()
    operators = [f"{op.name} ({op.kind})" for op in service.get("data").flow.nodes.values()]
    return {"operators": operators, "modules": modules, "crossings": crossings}


def main() -> None:
    got = asyncio.run(trace())
    print("the data scene's flow, in order:\n  " + "\n  ".join(got["operators"]))
    layers = sorted({m.split(".")[1] for m in got["modules"]})
    print(f"\nmodules entered: {len(got['modules'])} in {len(layers)} packages ({', '.join(layers)})")
    print(f"layer crossings: {sum(got['crossings'].values())} calls over {len(got['crossings'])} distinct edges")
    for (a, b), n in got["crossings"].most_common():
        print(f"  {a} -> {b}: {n}")


if __name__ == "__main__":
    main()

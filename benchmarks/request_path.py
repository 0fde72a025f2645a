"""The path of one chat-with-data request: which DataPilot modules it runs through, and how often it
crosses from one layer to another, traced with ``sys.setprofile`` on the ``data`` scene (zero-cost
model, sample database, one warm call so no first-call loading is counted).

It prints the flow's operators in order (what the request does), the modules entered, and the layer
crossings: consecutive DataPilot calls whose top-level packages differ (``apps`` -> ``text2sql``...).

    .venv/bin/python benchmarks/request_path.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from datapilot.apps import ChatContext, SceneRequest, run_scene
from datapilot.core.config import DataSettings
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest, Usage
from datapilot.datasource import DataSources

SRC = str(Path(__import__("datapilot").__file__).resolve().parent)


class FixedModel:
    """A model client with no cost: the SQL for prompts, a sentence for chats."""

    async def generate(self, request: ModelRequest) -> ModelOutput:
        sql = "segment, COUNT(*) AS customers FROM customers GROUP BY segment"
        return ModelOutput(sql if request.prompt is not None else "Online leads.", "stop", Usage())

    async def stream(self, request: ModelRequest) -> Any:
        for piece in ("Online ", "leads."):
            yield ModelChunk(piece, None)
        yield ModelChunk("", "stop", Usage())

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo("fixed", "fixed", frozenset({"chat", "completion"}))]


def _module(frame: FrameType) -> str | None:
    path = frame.f_code.co_filename
    if not path.startswith(SRC):
        return None
    return "datapilot" + path[len(SRC) :].removesuffix(".py").replace("/", ".").removesuffix(".__init__")


async def trace() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        sources = DataSources(DataSettings(), Path(home))
        ctx = ChatContext(FixedModel(), "fixed", sources, DataSettings())  # type: ignore[arg-type]
        request = SceneRequest("How many customers per segment?")
        try:
            async for _ in run_scene("data", ctx, request):  # warm: schema, linker, database
                pass
            modules: Counter[str] = Counter()
            crossings: Counter[tuple[str, str]] = Counter()
            last: list[str] = []
            running: list[tuple[FrameType, str]] = []  # the operators whose execute is on the stack
            ran: list[str] = []  # operators in the order they ran
            outside: Counter[str] = Counter()  # module calls made outside any operator

            def profile(frame: FrameType, event: str, _: Any) -> None:
                if event == "return":
                    if running and running[-1][0] is frame:
                        running.pop()
                    return
                if event != "call":
                    return
                mod = _module(frame)
                if mod is None:
                    return
                if frame.f_code.co_name == "execute" and "self" in frame.f_locals:
                    op = frame.f_locals["self"]
                    if hasattr(op, "kind") and hasattr(op, "upstream"):
                        running.append((frame, op.name))
                        if not ran or ran[-1] != op.name:
                            ran.append(op.name)
                modules[mod] += 1
                layer = mod.split(".")[1]
                if not running and layer not in ("awel", "core"):
                    outside[mod] += 1
                if last and last[0] != layer:
                    crossings[(last[0], layer)] += 1
                last[:] = [layer]

            sys.setprofile(profile)
            try:
                async for _ in run_scene("data", ctx, request):
                    pass
            finally:
                sys.setprofile(None)
        finally:
            await sources.close()
    try:
        from datapilot.apps import scene_service  # the scenes as flows (absent before the redesign)

        flow = scene_service().get("data").flow
        operators = [f"{op.name} ({op.kind})" for op in flow.nodes.values()]
    except ImportError:
        operators = ["(a hand-written async generator: apps._scenes.data_scene)"]
    return {"operators": operators, "modules": modules, "crossings": crossings, "ran": ran, "outside": outside}


def main() -> None:
    got = asyncio.run(trace())
    print("the data scene's flow, in order:\n  " + "\n  ".join(got["operators"]))
    layers = sorted({m.split(".")[1] for m in got["modules"]})
    print(f"\nmodules entered: {len(got['modules'])} in {len(layers)} packages ({', '.join(layers)})")
    print(f"layer crossings: {sum(got['crossings'].values())} calls over {len(got['crossings'])} distinct edges")
    for (a, b), n in got["crossings"].most_common():
        print(f"  {a} -> {b}: {n}")
    print(f"\noperators run, in order: {' -> '.join(got['ran']) or 'none'}")
    total = sum(n for m, n in got["modules"].items() if m.split(".")[1] not in ("awel", "core"))
    out = sum(got["outside"].values())
    print(f"module calls (apps and the modules) outside any operator: {out} of {total}")
    for mod, n in got["outside"].most_common(8):
        print(f"  {mod}: {n}")


if __name__ == "__main__":
    main()

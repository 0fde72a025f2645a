"""What running the ``data`` chat scene as an AWEL flow adds over a hand-written async generator.

Both sides answer the same question over the sample database with the same zero-cost model (a fixed
SQL reply and a fixed sentence), so they do the same work: link, prompt, generate, run the SQL
read-only, chart, answer. ``direct`` is the scene as it was written before the redesign: one async
generator calling the pipeline and building the events itself. ``flow`` is ``SceneService.events``:
the scene's flow of module operators, its events through ``ctx.emit`` and the runner's queue. Calls
alternate between the two so machine noise hits both alike; the figure is the p50 difference.

    .venv/bin/python benchmarks/scene_flow.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from datapilot.apps import ChatContext, SceneRequest, chart_payload, scene_service, summary_of
from datapilot.core.config import DataSettings
from datapilot.core.events import ChartEvent, DoneEvent, Event, SQLEvent, TableEvent, TextEvent
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest, Usage
from datapilot.datasource import DataSources
from datapilot.text2sql import SQLAnswer, step_event

SQL = "segment, COUNT(*) AS customers FROM customers GROUP BY segment"
QUESTION = "How many customers per segment?"


class FixedModel:
    """A model client with no cost: the SQL for prompts, a sentence for chats."""

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return ModelOutput(SQL if request.prompt is not None else "Online leads.", "stop", Usage())

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        for piece in ("Online ", "leads."):
            yield ModelChunk(piece, None)
        yield ModelChunk("", "stop", Usage())

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo("fixed", "fixed", frozenset({"chat", "completion"}))]


async def direct(ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    """The scene as one hand-written generator (the pre-flow shape)."""
    source = request.datasource or ctx.settings.default_source
    connector = await ctx.sources.connector(source)
    pipeline = ctx.text2sql(connector, source, request.model, request.style)
    answer = SQLAnswer(request.question)
    async for ev in pipeline.steps(request.question, answer):
        shown = step_event(ev)
        if shown is not None:
            yield shown
    assert answer.result is not None
    yield SQLEvent(sql=answer.sql)
    yield TableEvent(**answer.result.to_dict())
    chart = chart_payload(answer.result, answer.chart, request.question)
    yield ChartEvent(**chart)
    parts = []
    async for chunk in ctx.llm.stream(ModelRequest(model="fixed", messages=[])):
        if chunk.text:
            parts.append(chunk.text)
            yield TextEvent(delta=chunk.text)
    yield DoneEvent(answer={"sql": answer.sql, "text": "".join(parts), "summary": summary_of(answer.result)})


async def measure(calls: int = 300) -> dict[str, float]:
    """p50 milliseconds per call of each side, and their difference."""
    with tempfile.TemporaryDirectory() as home:
        sources = DataSources(DataSettings(), Path(home))
        ctx = ChatContext(FixedModel(), "fixed", sources, DataSettings())  # type: ignore[arg-type]
        request = SceneRequest(QUESTION)
        service = scene_service()
        timings: dict[str, list[float]] = {"flow": [], "direct": []}

        async def run(side: str) -> None:
            events = service.events("data", ctx, request) if side == "flow" else direct(ctx, request)
            started = time.perf_counter()
            last: Any = None
            async for event in events:
                last = event
            timings[side].append((time.perf_counter() - started) * 1000)
            assert isinstance(last, DoneEvent)

        try:
            for _ in range(5):  # warm-up: the schema, the linker, the sample database
                await run("flow")
                await run("direct")
            timings = {"flow": [], "direct": []}
            for i in range(calls):
                for side in ("flow", "direct") if i % 2 else ("direct", "flow"):
                    await run(side)
        finally:
            await sources.close()
    flow, plain = statistics.median(timings["flow"]), statistics.median(timings["direct"])
    return {"flow_ms": flow, "direct_ms": plain, "added_ms": flow - plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    got = asyncio.run(measure(args.calls))
    print(
        f"data scene, {args.calls} calls each, p50: flow {got['flow_ms']:.3f} ms, "
        f"direct generator {got['direct_ms']:.3f} ms, added {got['added_ms'] * 1000:.0f} us"
    )


if __name__ == "__main__":
    main()

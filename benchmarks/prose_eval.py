"""How well each chat model writes the prose of the chat scenes: the data scene's short answer from a
query result, and plain chat.

Data cases (``benchmarks/data/prose_cases.json``): a question over the sample database and the SQL
that answers it. The SQL runs on the sample database; the result goes to the data scene's own
``scene_summarise`` operator (the step that writes the scene's one-sentence answer, called through the
operator registry, so the prompt measured is the one the scene sends). An answer is right when it states
every cell of the result (each name, each number at the precision it is written in) and no number that
is not in the result, the question or the row count. Chat cases go through the ``chat`` scene itself;
an answer is right when it holds one of the accepted words and none of the rejected phrases.

The scenes sample at temperature 0.2, so each case runs ``--repeats`` times; the figures are the share
of all answers that are right.

    .venv/bin/python benchmarks/prose_eval.py [--models gemma-3-270m smollm2-135m-instruct] [--repeats 3]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datapilot.apps import ChatContext, SceneRequest, scene_service
from datapilot.awel import DAG, OPERATORS, CallContext
from datapilot.core.config import DataSettings, default_models
from datapilot.core.events import DoneEvent
from datapilot.datasource import DataSources, QueryResult, jsonable
from datapilot.models.manager import ModelManager
from datapilot.text2sql import SQLAnswer, SQLTask, Text2SQL

CASES = Path(__file__).parent / "data" / "prose_cases.json"
DEFAULT_MODELS = ("gemma-3-270m", "smollm2-135m-instruct")

_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_MONTHS = ("January February March April May June July August September October November December").split()


def numbers_in(text: str) -> list[tuple[float, int]]:
    """The numbers written in ``text`` (ISO dates left out), each with the decimals it is written with."""
    found = []
    for raw in _NUMBER.findall(_DATE.sub(" ", text)):
        digits = raw.replace(",", "").rstrip(".")
        try:
            value = float(digits)
        except ValueError:
            continue
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        found.append((value, decimals))
    return found


def states_number(written: tuple[float, int], value: float) -> bool:
    """Whether a written number is ``value`` rounded to the precision it is written at (12,346 and
    12345.68 both state 12345.678; 12,000 does not)."""
    number, decimals = written
    return abs(number - value) <= 0.5 * 10**-decimals + 1e-9


def as_number(cell: Any) -> float | None:
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int | float):
        return float(cell)
    if isinstance(cell, str) and re.fullmatch(r"-?\d+(?:\.\d+)?", cell.strip()):
        return float(cell)
    return None


def date_forms(iso: str) -> list[str]:
    """An ISO date as written in prose: 2023-01-01, 2023-1-1, January 1, 2023, 1 January 2023."""
    year, month, day = iso.split("-")
    name = _MONTHS[int(month) - 1]
    short = f"{year}-{int(month)}-{int(day)}"
    return [iso, short, f"{name} {int(day)}, {year}", f"{int(day)} {name} {year}", f"{name} {int(day)} {year}"]


@dataclass
class Verdict:
    right: bool
    missing: list[str] = field(default_factory=list)
    wrong_numbers: list[str] = field(default_factory=list)


def judge_data(answer: str, question: str, result: QueryResult) -> Verdict:
    """Right when every cell of the result is stated and no number is made up."""
    cells = [jsonable(v) for row in result.rows for v in row]
    values = [n for n in (as_number(c) for c in cells) if n is not None]
    written = numbers_in(answer)
    lowered = answer.lower()
    missing: list[str] = []
    for cell in cells:
        number = as_number(cell)
        if number is not None:
            if not any(states_number(w, number) for w in written):
                missing.append(str(cell))
        elif isinstance(cell, str) and _DATE.fullmatch(cell):
            if not any(form.lower() in lowered for form in date_forms(cell)):
                missing.append(cell)
        elif str(cell).lower() not in lowered:
            missing.append(str(cell))
    allowed = [*values, *(n for n, _ in numbers_in(question)), float(len(result.rows))]
    dates = [int(p) for c in cells if isinstance(c, str) and _DATE.fullmatch(c) for p in c.split("-")]
    allowed += [float(p) for p in dates]
    wrong = [f"{n:g}" for n, d in written if not any(states_number((n, d), v) for v in allowed)]
    return Verdict(not missing and not wrong, missing, wrong)


def first_sentence(text: str) -> str:
    """The answer's first sentence: what a reader takes as the answer (a later "but actually ..." or a
    list of guesses does not make a wrong first statement right)."""
    return re.split(r"(?<=[.!?。])\s+|\n", text.strip(), maxsplit=1)[0]


def judge_chat(answer: str, case: dict[str, Any]) -> Verdict:
    """Right when the answer's first sentence holds an accepted word and the answer no rejected pattern."""
    flags = 0 if case.get("case_sensitive") else re.IGNORECASE
    head = first_sentence(answer)
    accepted = any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", head, flags) for w in case["accept"])
    rejected = [r for r in case.get("reject", []) if re.search(r, answer, flags)]
    return Verdict(accepted and not rejected, [] if accepted else list(case["accept"]), rejected)


async def summarise(ctx: ChatContext, pipeline: Text2SQL, question: str, result: QueryResult) -> str:
    """The data scene's short answer, written by its own ``scene_summarise`` operator."""
    operator = OPERATORS.get("scene_summarise")()  # the data scene's node, with its default parameters
    answer = SQLAnswer(question, result=result)
    task = SQLTask(question, answer, pipeline=pipeline)
    done: SQLTask = await operator.execute([task], CallContext(None, DAG("prose_eval"), ctx))
    return str(done.notes["final"]["text"])


async def chat(ctx: ChatContext, model: str, question: str) -> str:
    """A plain chat turn through the ``chat`` scene."""
    text = ""
    async for event in scene_service().events("chat", ctx, SceneRequest(question, model=model)):
        if isinstance(event, DoneEvent) and isinstance(event.answer, dict):
            text = str(event.answer.get("text", ""))
    return text


def load_cases(limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    cases = json.loads(CASES.read_text())
    return {kind: cases[kind][:limit] for kind in ("data", "chat")}


async def sample_results(sources: DataSources, cases: dict[str, list[dict[str, Any]]]) -> list[QueryResult]:
    """Each data case's result on the sample database (what the summarise step is given)."""
    connector = await sources.connector(DataSettings().default_source)
    return [await connector.run(c["sql"], 100, 30.0) for c in cases["data"]]


async def evaluate(models: list[str], repeats: int, limit: int | None = None) -> dict[str, Any]:
    cases = load_cases(limit)
    configs = [c for c in default_models() if c.name in models]
    if {c.name for c in configs} != set(models):
        raise SystemExit(f"unknown model among {models}: the embedded ones are {[c.name for c in default_models()]}")
    report: dict[str, Any] = {"repeats": repeats, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = DataSettings()
        sources = DataSources(settings, home)
        manager = ModelManager(configs, home)
        await manager.start()
        try:
            results = await sample_results(sources, cases)
            connector = await sources.connector(settings.default_source)
            for model in models:
                ctx = ChatContext(manager, model, sources, settings)
                pipeline = Text2SQL(manager, model, connector)
                rows = await _answers(ctx, pipeline, model, cases, results, repeats)
                report["models"][model] = figures(rows, cases, results)
        finally:
            await manager.close()
            await sources.close()
    return report


async def rescore(report: dict[str, Any]) -> dict[str, Any]:
    """A saved report judged again (after a change to the judges; no model is called)."""
    cases = load_cases()
    with tempfile.TemporaryDirectory() as tmp:
        sources = DataSources(DataSettings(), Path(tmp))
        try:
            results = await sample_results(sources, cases)
        finally:
            await sources.close()
    for model, got in report["models"].items():
        judged = figures(got["answers"], cases, results)
        if judged["median_s"] is None:  # a report from before answers kept their times
            judged["median_s"] = got.get("median_s")
        report["models"][model] = judged
    return report


async def _answers(
    ctx: ChatContext, pipeline: Text2SQL, model: str, cases: dict[str, Any], results: list[QueryResult], repeats: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case, result in zip(cases["data"], results, strict=True):
        for r in range(repeats):
            started = time.perf_counter()
            text = await summarise(ctx, pipeline, case["question"], result)
            took = time.perf_counter() - started
            rows.append({"kind": "data", "question": case["question"], "repeat": r, "answer": text, "seconds": took})
    for case in cases["chat"]:
        for r in range(repeats):
            started = time.perf_counter()
            text = await chat(ctx, model, case["question"])
            took = time.perf_counter() - started
            rows.append({"kind": "chat", "question": case["question"], "repeat": r, "answer": text, "seconds": took})
    return rows


def figures(rows: list[dict[str, Any]], cases: dict[str, Any], results: list[QueryResult]) -> dict[str, Any]:
    """Each answer judged, and the shares of right ones."""
    data_cases = {c["question"]: (c, r) for c, r in zip(cases["data"], results, strict=True)}
    chat_cases = {c["question"]: c for c in cases["chat"]}
    for row in rows:
        if row["kind"] == "data":
            case, result = data_cases[row["question"]]
            verdict = judge_data(row["answer"], case["question"], result)
        else:
            verdict = judge_chat(row["answer"], chat_cases[row["question"]])
        row.update(verdict.__dict__)
    data = [row for row in rows if row["kind"] == "data"]
    chats = [row for row in rows if row["kind"] == "chat"]
    times = [row["seconds"] for row in rows if "seconds" in row]
    return {
        "data_right": sum(row["right"] for row in data) / len(data),
        "data_all_facts": sum(not row["missing"] for row in data) / len(data),
        "data_no_wrong_number": sum(not row["wrong_numbers"] for row in data) / len(data),
        "chat_right": sum(row["right"] for row in chats) / len(chats),
        "data_cases": len(cases["data"]),
        "chat_cases": len(cases["chat"]),
        "median_s": round(statistics.median(times), 3) if times else None,
        "answers": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, help="only the first N cases of each kind (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the whole report, every answer included")
    parser.add_argument("--rescore", type=Path, help="judge the answers of a saved --json report again")
    args = parser.parse_args()
    if args.rescore is not None:
        report = asyncio.run(rescore(json.loads(args.rescore.read_text())))
    else:
        report = asyncio.run(evaluate(args.models, args.repeats, args.limit))
    if args.json is not None:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    for model, got in report["models"].items():
        print(
            f"{model}: data answers right {got['data_right']:.1%} (all facts {got['data_all_facts']:.1%}, "
            f"no wrong number {got['data_no_wrong_number']:.1%}; {got['data_cases']} cases x {report['repeats']}), "
            f"chat right {got['chat_right']:.1%} ({got['chat_cases']} x {report['repeats']}), "
            f"median {got['median_s']} s per answer"
        )


if __name__ == "__main__":
    main()

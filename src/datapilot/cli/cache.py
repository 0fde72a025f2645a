"""``datapilot cache ...`` and ``datapilot bench cache``: the semantic cache from the command line.

``query``, ``insert``, ``stats`` and ``truncate`` work on the embedded store under ``--home`` directly,
or on a running server with ``--url`` (the server's base URL; its ``/api/cache`` API is used). The
embedded store belongs to one process at a time: while a server runs on it, use ``--url``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.table import Table

from datapilot.cli._common import (
    ConfigOpt,
    HomeOpt,
    ProfileOpt,
    ServerOpt,
    bind,
    err,
    out,
    settings_from,
    setup_logging,
)
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError

T = TypeVar("T")

cache_app = typer.Typer(
    help="The semantic cache: serve it alone, query, insert, stats, truncate, bench.", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="the scope's model")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="the scope's tenant (optional)")]
SystemOpt = Annotated[str | None, typer.Option("--system", help="system prompt that is part of the key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _messages(text: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def _local(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from datapilot.cache import SemanticCache

    async def run() -> T:
        async with SemanticCache(settings.cache, settings.home) as cache:
            return await work(cache)

    return asyncio.run(run())


def _http(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """A call to a cache server's ``/api/cache``; a refusal is the server's own message."""
    try:
        resp = httpx.request(method, f"{url.rstrip('/')}/api/cache/{path}", timeout=120, **kw)
    except httpx.HTTPError as exc:
        raise DataPilotError(f"no cache server answering at {url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", {}).get("message", resp.text)
        except ValueError:
            message = resp.text
        raise DataPilotError(message)
    return resp


def _remote(url: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
    return dict(_http(url, method, path, **kw).json())


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("field", "value")
    for key, value in data.items():
        table.add_row(key, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value)
    out.print(table)


@cache_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (ModelCache's default is 5000)")] = 5000,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run only the cache: ModelCache's POST /modelcache and /api/cache, no models."""
    import uvicorn

    from datapilot.server.cache_api import create_cache_app

    settings = settings_from(config, profile, home)
    setup_logging(log_level)
    sock = bind(host, port)
    server = uvicorn.Server(
        uvicorn.Config(create_cache_app(settings), log_config=None, log_level=log_level, timeout_graceful_shutdown=5)
    )
    h, p = sock.getsockname()[:2]
    err.print(f"DataPilot cache serving ModelCache's API on [bold]http://{h}:{p}/modelcache[/]")
    asyncio.run(server.serve(sockets=[sock]))


@cache_app.command("query")
def query(
    text: Annotated[str, typer.Argument(help="the question")],
    model: ModelOpt,
    tenant: TenantOpt = None,
    system: SystemOpt = None,
    url: ServerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Look a question up."""
    scope = {"model": model, **({"tenant": tenant} if tenant else {})}
    if url:
        data = _remote(url, "POST", "query", json={"scope": scope, "messages": _messages(text, system)})
    else:
        settings = settings_from(config, profile, home)
        data = _local(settings, lambda c: c.query(scope, _messages(text, system))).to_dict()
    _print(data, as_json)
    if not data.get("hit"):
        raise typer.Exit(1)


@cache_app.command("insert")
def insert(
    model: ModelOpt,
    question: Annotated[str | None, typer.Argument(help="the question")] = None,
    answer: Annotated[str | None, typer.Argument(help="its answer")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSONL of {question|messages, answer} rows, stored at once")
    ] = None,
    tenant: TenantOpt = None,
    system: SystemOpt = None,
    url: ServerOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Store one answer, or a JSONL file of them (one transaction: a bad row stores nothing)."""
    entries: list[dict[str, Any]] = []
    if file is not None:
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row.get("messages") or _messages(row["question"], system)
                entries.append({"messages": messages, "answer": row["answer"]})
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DataPilotError(f"{file}:{n}: not a {{question|messages, answer}} object ({exc})") from None
    elif question and answer:
        entries.append({"messages": _messages(question, system), "answer": answer})
    else:
        raise DataPilotError("give QUESTION and ANSWER, or --file")
    scope = {"model": model, **({"tenant": tenant} if tenant else {})}
    if url:
        ids = _remote(url, "POST", "insert", json={"scope": scope, "entries": entries})["ids"]
    else:
        settings = settings_from(config, profile, home)
        ids = _local(settings, lambda c: c.insert_many(scope, [(e["messages"], e["answer"]) for e in entries]))
    err.print(f"stored {len(ids)} entr{'y' if len(ids) == 1 else 'ies'} (ids {ids[0]}..{ids[-1]})")


@cache_app.command("stats")
def stats(
    model: ModelOpt,
    tenant: TenantOpt = None,
    url: ServerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Entries, hit rate and latency percentiles of a scope."""
    if url:
        data = _remote(url, "GET", "stats", params={"model": model, **({"tenant": tenant} if tenant else {})})
    else:
        settings = settings_from(config, profile, home)
        scope = {"model": model, **({"tenant": tenant} if tenant else {})}
        data = _local(settings, lambda c: c.stats(scope)).to_dict()
    _print(data, as_json)


@cache_app.command("truncate")
def truncate(
    model: ModelOpt,
    tenant: TenantOpt = None,
    url: ServerOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Remove every entry of one scope (other scopes keep theirs)."""
    scope = {"model": model, **({"tenant": tenant} if tenant else {})}
    if not yes and not typer.confirm(f"remove every cache entry of {scope}?"):
        raise typer.Exit(1)
    if url:
        n = _remote(url, "POST", "truncate", json={"scope": scope})["removed"]
    else:
        settings = settings_from(config, profile, home)
        n = _local(settings, lambda c: c.truncate(scope))
    err.print(f"removed {n} entries")


def _bench(
    data: Path | None,
    pairs: int,
    out_dir: Path,
    fill: int,
    concurrency: int,
    thresholds: str | None,
    baseline: bool,
    as_json: bool,
    config: Path | None,
    profile: str | None,
) -> None:
    from datapilot.cache import DEFAULT_SWEEP, FALSE_KINDS, default_data_file, run_bench, write_outputs

    path = data or default_data_file()
    if path is None or not path.is_file():
        raise DataPilotError("no data set: pass --data FILE.jsonl[.gz] (two texts and a label per line)")
    settings = settings_from(config, profile)
    sweep = tuple(float(t) for t in thresholds.split(",")) if thresholds else DEFAULT_SWEEP
    report = asyncio.run(
        run_bench(
            path,
            pairs=pairs,
            settings=settings.cache,
            thresholds=sweep,
            fill=fill,
            concurrency=concurrency,
            baseline=baseline,
            progress=lambda msg: err.print(f"[dim]{msg}[/]"),
        )
    )
    files = write_outputs(report, out_dir)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    rows = [report.default, *report.sweep]
    table = Table(
        "threshold",
        "hits",
        "true hits",
        "precision",
        "recall",
        "false-hit rate",
        title=f"{path.name}: {report.pairs} pairs, {report.positives} duplicates, {report.entries} entries",
    )
    for row in rows:
        d = row.to_dict()
        table.add_row(
            str(d["threshold"]),
            str(d["hits"]),
            str(d["true_hits"]),
            f"{d['precision']:.3f}",
            f"{d['recall']:.3f}",
            f"{d['false_hit_rate']:.3f}",
        )
    out.print(table)
    kinds = Table("threshold", "near miss", "same text", "known dup.", "other row", "lenient precision")
    kinds.title = "false hits by kind"
    for row in rows:
        d = row.to_dict()
        kinds.add_row(str(d["threshold"]), *(str(d[k]) for k in FALSE_KINDS), f"{d['lenient_precision']:.3f}")
    out.print(kinds)
    out.print(
        "near miss: the probe's own row, on a pair labelled different. same text: another row stored under the"
        " probe's own words. known dup.: another row the data's labels join to the probe. other row: the rest."
        " Lenient precision counts same-text and known-duplicate hits as right."
    )
    out.print(
        f"{report.verbatim_elsewhere} probes are stored word for word under another row: a cache that serves"
        f" exact repeats can reach at most {report.precision_bound(report.default.recall):.3f} strict precision"
        f" at recall {report.default.recall:.3f}."
    )
    if report.baseline:
        base = Table("threshold", "precision", "recall", title="cosine only (no guards, no margin)")
        for row in report.baseline:
            base.add_row(str(row.threshold), f"{row.precision:.3f}", f"{row.recall:.3f}")
        out.print(base)
    e, lk = report.embed_ms, report.lookup_ms
    out.print(f"embedding ms p50/p95/p99: {e['p50']} / {e['p95']} / {e['p99']}")
    out.print(f"lookup ms (excluding embedding) p50/p95/p99: {lk['p50']} / {lk['p95']} / {lk['p99']}")
    out.print(f"bulk insert: {report.pairs} in {report.insert_s:.1f}s ({report.insert_per_s:.0f}/s)")
    out.print(f"end to end: {report.queries_per_s:.0f} queries/s with {report.concurrency} concurrent clients")
    err.print("wrote " + ", ".join(str(f) for f in files))


DataOpt = Annotated[Path | None, typer.Option("--data", help="JSONL (.gz) pairs [default: shared QQP test half]")]
PairsOpt = Annotated[int, typer.Option("--pairs", help="pairs to use (from the top)", min=1)]
OutOpt = Annotated[Path, typer.Option("--out", help="folder for the CSV, JSON and PNG")]
FillOpt = Annotated[int, typer.Option("--fill", help="extra synthetic entries, to time lookups in a big scope")]
ConcOpt = Annotated[int, typer.Option("--concurrency", help="clients for the end-to-end throughput", min=1)]
SweepOpt = Annotated[str | None, typer.Option("--thresholds", help="comma-separated cosine thresholds")]
BaseOpt = Annotated[bool, typer.Option("--baseline/--no-baseline", help="also sweep cosine only")]


ChatOpt = Annotated[
    Path | None,
    typer.Option("--chat", help="chat pairs JSONL [default: the shipped benchmarks/data/cache_pairs_dev.jsonl]"),
]
OnlyChatOpt = Annotated[bool, typer.Option("--only-chat", help="the chat pairs only, not the QQP run")]


def _score_row(label: str, d: dict[str, Any]) -> list[str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    return [label, str(d["probes"]), str(d["hits"]), f(d["precision"]), f(d["recall"]), f(d["false_hit_rate"])]


def chat_tables(report: dict[str, Any]) -> list[Table]:
    """The chat benchmark as tables: at the scope's policy by language and by kind, and the sweep."""
    cols = ("", "probes", "hits", "precision", "recall", "false-hit rate")
    default = report["default"]
    head = Table(*cols, title=f"{Path(report['data']).name}: {report['cases']} chat pairs, at the policy")
    head.add_row(*_score_row("all", default))
    for lang, d in default["by_lang"].items():
        head.add_row(*_score_row(lang, d))
    kinds = Table(*cols, title="by kind and language")
    for name, d in default["by_kind"].items():
        kinds.add_row(*_score_row(name, d))
    sweep = Table("threshold", "precision", "recall", "en P / R", "zh P / R", title="threshold sweep")
    for row in report["sweep"]:
        langs = row["by_lang"]

        def pr(lang: str, langs: dict[str, Any] = langs) -> str:
            d = langs.get(lang)
            return "-" if d is None else f"{d['precision'] or 0:.3f} / {d['recall'] or 0:.3f}"

        sweep.add_row(row["label"], f"{row['precision'] or 0:.3f}", f"{row['recall'] or 0:.3f}", pr("en"), pr("zh"))
    return [head, kinds, sweep]


def _chat_bench(chat: Path | None, as_json: bool, config: Path | None, profile: str | None) -> dict[str, Any]:
    from datapilot.cache import default_chat_file, run_chat_bench

    path = chat or default_chat_file()
    if path is None or not path.is_file():
        raise DataPilotError("no chat pairs: pass --chat FILE.jsonl (see benchmarks/data/cache_pairs_dev.jsonl)")
    settings = settings_from(config, profile)
    report = asyncio.run(
        run_chat_bench(path, settings=settings.cache, progress=lambda msg: err.print(f"[dim]{msg}[/]"))
    ).to_dict()
    if not as_json:
        for table in chat_tables(report):
            out.print(table)
        reasons = ", ".join(f"{k} {v}" for k, v in report["default"]["miss_reasons"].items())
        out.print(f"why probes that should hit missed: {reasons or 'none missed'}")
    return report


@bench_app.command("cache")
def bench_cache(
    data: DataOpt = None,
    pairs: PairsOpt = 5000,
    out_dir: OutOpt = Path("bench-results"),
    fill: FillOpt = 0,
    concurrency: ConcOpt = 32,
    thresholds: SweepOpt = None,
    baseline: BaseOpt = True,
    chat: ChatOpt = None,
    only_chat: OnlyChatOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Hit precision, recall, false hits and latency on a paraphrase set (QQP), for a sweep of thresholds,
    and precision, recall and false hits by kind and language on bilingual chat pairs."""
    if not only_chat:
        _bench(data, pairs, out_dir, fill, concurrency, thresholds, baseline, as_json, config, profile)
    report = _chat_bench(chat, as_json, config, profile)
    if as_json:
        out.print_json(json.dumps(report, ensure_ascii=False))


def _feedback_pairs(settings: Settings, model: str, tenant: str | None, url: str | None) -> Path:
    """The scope's feedback as a labelled-pairs file (the export's lines), in DATAPILOT_HOME/cache."""
    scope = {"model": model, **({"tenant": tenant} if tenant else {})}
    if url:
        text = _http(url, "GET", "feedback/export", params=scope).text
        lines = [line for line in text.splitlines() if line.strip()]
    else:
        pairs = _local(settings, lambda c: c.feedback_pairs(scope))
        lines = [json.dumps(p, ensure_ascii=False) for p in pairs]
    if not lines:
        raise DataPilotError(f"the scope {scope} has no feedback marks yet: mark cached answers right or wrong first")
    folder = settings.home.expanduser() / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"feedback-{model}-{tenant or 'default'}.jsonl".replace("/", "_")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err.print(f"[dim]{len(lines)} feedback marks written to {path}[/]")
    return path


@cache_app.command("calibrate")
def calibrate_cmd(
    pairs_file: Annotated[
        Path | None, typer.Option("--pairs", help="labelled pairs: chat pairs or a/b/label JSONL")
    ] = None,
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="the scope's own feedback marks as the pairs (needs --model)")
    ] = False,
    target_precision: Annotated[
        float, typer.Option("--target-precision", min=0.5, max=1.0, help="the hit precision to reach")
    ] = 0.95,
    model: Annotated[str | None, typer.Option("--model", "-m", help="apply to this scope's model")] = None,
    tenant: TenantOpt = None,
    apply: Annotated[bool, typer.Option("--apply", help="set the scope's thresholds to the one chosen")] = False,
    url: ServerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Choose a scope's cosine threshold from labelled pairs: the one with the most right hits whose
    precision reaches --target-precision (the rest of the policy as configured); --apply sets it.
    --from-feedback takes the pairs from the scope's own marks (👍/👎 on cached answers)."""
    from datapilot.cache import calibrate

    if (pairs_file is None) == (not from_feedback):
        raise DataPilotError("give --pairs FILE or --from-feedback (with --model), one of them")
    if (apply or from_feedback) and not model:
        raise DataPilotError("--apply and --from-feedback need --model: the scope whose thresholds to set")
    settings = settings_from(config, profile, home)
    if from_feedback and model:
        pairs_file = _feedback_pairs(settings, model, tenant, url)
    assert pairs_file is not None
    if not pairs_file.is_file():
        raise DataPilotError(f"no such file: {pairs_file}")
    result = asyncio.run(
        calibrate(pairs_file, target_precision, settings=settings.cache, progress=lambda m: err.print(f"[dim]{m}[/]"))
    )
    data = result.to_dict()
    if as_json:
        out.print_json(json.dumps(data, ensure_ascii=False))
    else:
        table = Table("threshold", "hits", "precision", "recall", title=f"{pairs_file.name}: calibration sweep")
        for row in data["sweep"]:
            mark = " ←" if result.threshold is not None and float(row["threshold"]) == result.threshold else ""
            table.add_row(
                f"{row['threshold']}{mark}",
                str(row["hits"]),
                f"{row['precision'] or 0:.3f}",
                f"{row['recall'] or 0:.3f}",
            )
        out.print(table)
    if result.threshold is None:
        raise DataPilotError(
            f"no threshold reaches precision {target_precision} on {pairs_file.name}: lower --target-precision, "
            "or give more pairs"
        )
    err.print(f"threshold {result.threshold:.2f} for precision ≥ {target_precision}")
    if apply and model:
        scope = {"model": model, **({"tenant": tenant} if tenant else {})}
        values = {"threshold_short": result.threshold, "threshold_long": result.threshold}
        if url:
            _remote(url, "PUT", "settings", json={"scope": scope, "settings": values})
        else:
            _local(settings, lambda c: c.set_policy(scope, values))
        err.print(f"set {scope}'s thresholds to {result.threshold:.2f}")


cache_app.command("bench", help="The same as `datapilot bench cache`.")(bench_cache)


def _train_progress(bar: Any, task: Any, step: int, steps: int, loss: float) -> None:
    bar.update(task, completed=step, total=steps, loss=loss)
    if not err.is_terminal and (step == steps or step % max(1, steps // 20) == 0):  # a log: a line each 5%
        err.print(f"step {step}/{steps}, loss {loss:.3f}")


@cache_app.command("train-reranker")
def train_reranker_cmd(
    data: Annotated[Path, typer.Option("--data", help="JSONL (.gz) pairs: a, b, label (1 = same question)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the cross-encoder to")],
    base: Annotated[
        Path | None, typer.Option("--base", help="BERT-style model folder to start from [default: the bundled MiniLM]")
    ] = None,
    pairs: Annotated[int, typer.Option("--pairs", help="pairs to use (after --skip)", min=2)] = 1_000_000,
    skip: Annotated[int, typer.Option("--skip", help="pairs to leave out from the top (e.g. kept for tuning)")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per pair", min=8)] = 64,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=0.0)] = 3e-5,
    holdout: Annotated[float, typer.Option("--holdout", help="share held out and scored", min=0.0, max=0.5)] = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a paraphrase cross-encoder for the cache's reranker stage from labelled question pairs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from datapilot.cache import load_pairs, train_reranker

    if not data.is_file():
        raise DataPilotError(f"no data file {data}: pass --data FILE.jsonl[.gz] (a, b, label per line)")
    rows = load_pairs(data, skip + pairs)[skip:]
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"))
    with Progress(*columns, TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("train", total=None, loss=0.0)
        report = train_reranker(
            rows,
            out_dir,
            base=base,
            epochs=epochs,
            batch_size=batch_size,
            max_length=max_length,
            learning_rate=learning_rate,
            holdout=holdout,
            progress=lambda step, steps, loss: _train_progress(bar, task, step, steps, loss),
        )
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(f"trained on {report.train_pairs} pairs in {report.seconds:.0f}s ({report.steps} steps): {out_dir}")
    if report.holdout_pairs:
        out.print(
            f"held-out {report.holdout_pairs} pairs: accuracy {report.holdout_accuracy:.3f},"
            f" AUC {report.holdout_auc or 0:.3f},"
            f" precision at recall 0.40 {report.holdout_precision_at_recall_0_4 or 0:.3f}"
        )
    out.print(
        f'use it: [cache.rerankers.NAME] kind = "cross_encoder", path = "{out_dir.resolve()}"; then reranker = "NAME"'
        " in the scope's policy",
        markup=False,
    )

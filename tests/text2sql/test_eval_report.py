"""The evaluation report: error classes of wrong predictions, EX by language, time per question, the
CLI's JSON, CSV and chart, and the ablation of pipeline stages, all with scripted predictors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datapilot.cli import app as cli_app
from datapilot.testing import write_config
from datapilot.text2sql import EvalReport, Prediction, Question, Text2SQLOptions, evaluate
from datapilot.text2sql._eval import ERROR_CLASSES, ablation_rows, classify_error

JOIN_GOLD = (
    "SELECT COUNT(*) FROM orders AS o JOIN customers AS c ON o.customer_id = c.customer_id WHERE c.city = 'Shanghai'"
)

PAIRS = [
    # (class, predicted, gold, executed)
    ("not_executable", None, "SELECT COUNT(*) FROM customers", False),
    ("not_executable", "SELECT nonsense FROM nowhere", "SELECT COUNT(*) FROM customers", False),
    ("not_executable", "SELECT COUNT(*) FROM customers", "SELECT COUNT(*) FROM customers", False),  # timed out
    ("wrong_table", "SELECT COUNT(*) FROM products", "SELECT COUNT(*) FROM customers", True),
    ("wrong_table", "SELECT name FROM suppliers", "SELECT name FROM regions", True),
    ("wrong_table", "SELECT COUNT(*) FROM orders JOIN products ON 1 = 1", "SELECT COUNT(*) FROM orders", True),
    ("missing_join", "SELECT COUNT(*) FROM orders WHERE city = 'Shanghai'", JOIN_GOLD, True),
    (
        "missing_join",
        "SELECT product_name FROM products ORDER BY unit_price DESC LIMIT 1",
        "SELECT p.product_name FROM products AS p JOIN order_items AS i ON i.product_id = p.product_id "
        "GROUP BY p.product_id ORDER BY SUM(i.quantity) DESC LIMIT 1",
        True,
    ),
    ("wrong_column", "SELECT name FROM customers", "SELECT city FROM customers", True),
    (
        "wrong_column",
        "SELECT COUNT(*) FROM orders AS x JOIN customers AS y ON x.customer_id = y.customer_id "
        "WHERE y.region = 'Shanghai'",
        JOIN_GOLD,
        True,
    ),
    ("wrong_column", "SELECT SUM(quantity) FROM order_items", "SELECT SUM(unit_price) FROM order_items", True),
    (
        "wrong_value",
        "SELECT COUNT(*) FROM orders AS x JOIN customers AS y ON x.customer_id = y.customer_id "
        "WHERE y.city = 'shanghai'",
        JOIN_GOLD,
        True,
    ),
    (
        "wrong_value",
        "SELECT COUNT(*) FROM orders WHERE year = 2023",
        "SELECT COUNT(*) FROM orders WHERE year = 2024",
        True,
    ),
    ("wrong_value", "SELECT name FROM p WHERE price > 10.5", "SELECT name FROM p WHERE price > 10", True),
    ("wrong_aggregation", "SELECT SUM(amount) FROM orders", "SELECT AVG(amount) FROM orders", True),
    ("wrong_aggregation", "SELECT COUNT(DISTINCT city) FROM customers", "SELECT COUNT(city) FROM customers", True),
    (
        "wrong_aggregation",
        "SELECT city, COUNT(*) FROM customers GROUP BY city",
        "SELECT COUNT(*) FROM customers",
        True,
    ),
    (
        "wrong_aggregation",
        "SELECT name, COUNT(*) AS n FROM p GROUP BY name ORDER BY n DESC LIMIT 3",
        "SELECT name, COUNT(*) FROM p GROUP BY name ORDER BY COUNT(*) DESC LIMIT 5",
        True,
    ),
    ("wrong_aggregation", "SELECT name FROM p ORDER BY price", "SELECT name FROM p ORDER BY price DESC", True),
    ("other", "SELECT name FROM p WHERE price < 10", "SELECT name FROM p WHERE price > 10", True),
    (
        "other",  # the same parts, written with other aliases and an output name: nothing to blame
        "SELECT x.name, COUNT(*) AS n FROM p AS x GROUP BY x.name HAVING n > 2",
        "SELECT name, COUNT(*) FROM p GROUP BY name HAVING COUNT(*) > 2",
        True,
    ),
]


@pytest.mark.parametrize(("expected", "pred", "gold", "executed"), PAIRS)
def test_error_class_of_a_hand_made_pair(expected: str, pred: str | None, gold: str, executed: bool) -> None:
    assert classify_error(pred, gold, executed) == expected


def test_every_error_class_has_two_pairs_or_more() -> None:
    counts = {c: sum(p[0] == c for p in PAIRS) for c in ERROR_CLASSES}
    assert all(n >= 2 for n in counts.values()), counts


def test_language_comes_from_the_file_or_the_question() -> None:
    assert Question("How many?", "SELECT 1", "db").language == "en"
    assert Question("有多少客户?", "SELECT 1", "db").language == "zh"
    assert Question("有多少客户?", "SELECT 1", "db", extra={"language": "ja"}).language == "ja"


def _copy_sample(sample_db: Path, folder: Path) -> Path:
    (folder / "sample").mkdir(parents=True)
    (folder / "sample" / "sample.sqlite").write_bytes(sample_db.read_bytes())
    return folder


async def test_report_by_language_executable_errors_and_time(sample_db: Path, tmp_path: Path) -> None:
    db_dir = _copy_sample(sample_db, tmp_path / "dbs")
    questions = [
        Question("How many customers are there?", "SELECT COUNT(*) FROM customers", "sample", "easy"),
        Question("有多少产品?", "SELECT COUNT(*) FROM products", "sample", "easy"),
        Question("有多少供应商?", "SELECT COUNT(*) FROM suppliers", "sample", "easy", {"language": "zh"}),
        Question("How many cancelled orders?", "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'", "sample",
                 "medium"),
    ]  # fmt: skip
    answers = {
        questions[0].question: ("SELECT COUNT(*) FROM customers", 1, None),
        questions[1].question: ("SELECT COUNT(*) FROM customers", 1, None),
        questions[2].question: ("SELECT COUNT(*) FROM nowhere", 3, "no such table: nowhere"),
        questions[3].question: ("SELECT COUNT(*) FROM orders WHERE status = 'Cancelled'", 2, None),
    }

    async def predict(q: Question, path: Path) -> tuple[str | None, int, str | None]:
        return answers[q.question]

    report = await evaluate(questions, db_dir, predict)
    assert [p.error_class for p in report.predictions] == [None, "wrong_table", "not_executable", "wrong_value"]
    assert report.executable == 3 and report.executable_share == 0.75
    assert report.by_language() == {"en": (1, 2, 0.5), "zh": (0, 2, 0.0)}
    assert report.errors() == {c: {"wrong_table": 1, "not_executable": 1, "wrong_value": 1}.get(c, 0)
                               for c in ERROR_CLASSES}  # fmt: skip
    data = report.to_dict()
    assert data["by_language"]["zh"] == {"correct": 0, "total": 2, "execution_accuracy": 0.0}
    assert data["time"]["mean_attempts"] == 1.75 and data["executable_share"] == 0.75
    report.write_csv(tmp_path / "p.csv")
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["language"], r["error_class"]) for r in rows] == [
        ("en", ""), ("zh", "wrong_table"), ("zh", "not_executable"), ("en", "wrong_value")
    ]  # fmt: skip


def test_time_stats_and_ablation_rows() -> None:
    q = Question("q", "SELECT 1", "db", "easy")
    timed = [Prediction(q, "SELECT 1", i < 3, attempts=1 + i % 2, elapsed_s=float(i + 1)) for i in range(10)]
    report = EvalReport(timed)
    t = report.time_stats()
    assert t["median_s"] == 5.5 and t["p90_s"] == pytest.approx(9.1) and t["mean_attempts"] == 1.5
    assert EvalReport([]).time_stats()["median_s"] == 0.0
    off = EvalReport([Prediction(q, "SELECT 1", i < 1, elapsed_s=1.0, executed=True) for i in range(10)])
    rows = ablation_rows([("all_on", report), ("constrain", off)])
    assert [r["stage"] for r in rows] == ["all_on", "constrain"]
    assert rows[0]["delta_ex"] == 0.0 and rows[1]["delta_ex"] == -0.2 and rows[1]["executable_share"] == 1.0


# --- the CLI, in process, over a Spider-format set of its own ----------------------------------------------------


@pytest.fixture
def spider_set(sample_db: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Questions JSON, a databases folder, and a config whose scripted model answers each question by
    the marker in it (the prompt holds other worked examples, never the markers)."""
    questions = [
        {"db_id": "sample", "question": "[q1] How many customers are there?", "query": "SELECT COUNT(*) FROM customers",
         "language": "en"},
        {"db_id": "sample", "question": "[q2] 有多少产品?", "query": "SELECT COUNT(*) FROM products"},
        {"db_id": "sample", "question": "[q3] How many orders have been cancelled?",
         "query": "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'"},
        {"db_id": "sample", "question": "[q4] Which regions are there?", "query": "SELECT name FROM regions"},
    ]  # fmt: skip
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    rules = [
        [r"\[q1\]", "SELECT COUNT(*) FROM customers"],
        [r"\[q2\]", "SELECT COUNT(*) FROM customers"],
        [r"\[q3\]", "SELECT COUNT(*) FROM orders WHERE status = 'Cancelled'"],
        [r"\[q4\]", "SELECT nonsense FROM nowhere"],
    ]
    config = write_config(
        tmp_path / "datapilot.toml", [{"name": "s", "backend": "scripted", "params": {"rules": rules}}]
    )
    return path, _copy_sample(sample_db, tmp_path / "dbs"), config


def _eval(tmp_path: Path, spider_set: tuple[Path, Path, Path], *args: str) -> dict[str, object]:
    questions, db_dir, config = spider_set
    result = CliRunner().invoke(
        cli_app,
        ["eval", "text2sql", "--questions", str(questions), "--db-dir", str(db_dir), "--corrections", "1",
         "--output", str(tmp_path / "preds.csv"), "--json", *args,
         "--config", str(config), "--home", str(tmp_path / "home")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_cli_reports_languages_errors_time_and_a_chart(tmp_path: Path, spider_set: tuple[Path, Path, Path]) -> None:
    png = tmp_path / "eval.png"
    report = _eval(tmp_path, spider_set, "--png", str(png))
    assert report["total"] == 4 and report["correct"] == 1 and report["executable_share"] == 0.75
    assert report["by_language"] == {
        "en": {"correct": 1, "total": 3, "execution_accuracy": 0.3333},
        "zh": {"correct": 0, "total": 1, "execution_accuracy": 0.0},
    }
    errors = report["errors"]
    assert isinstance(errors, dict) and list(errors) == list(ERROR_CLASSES)
    assert {k: v for k, v in errors.items() if v} == {"not_executable": 1, "wrong_table": 1, "wrong_value": 1}
    time = report["time"]
    assert isinstance(time, dict) and time["mean_attempts"] == 1.25  # q4 ran out of its one correction
    assert time["p90_s"] >= time["median_s"] > 0
    assert "ablation" not in report and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    rows = list(csv.DictReader((tmp_path / "preds.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["error_class"] for r in rows] == ["", "wrong_table", "wrong_value", "not_executable"]


def test_cli_ablation_runs_each_stage_off(tmp_path: Path, spider_set: tuple[Path, Path, Path]) -> None:
    png = tmp_path / "ablation.png"
    report = _eval(tmp_path, spider_set, "--ablation", "--limit", "2", "--candidates", "2", "--png", str(png))
    optional = [s for s in ("values", "verified") if hasattr(Text2SQLOptions(), s)]
    rows = report["ablation"]
    assert isinstance(rows, list)
    assert [r["stage"] for r in rows] == ["all_on", "constrain", "pick_examples", *optional, "candidates"]
    assert all(r["total"] == 2 and r["execution_accuracy"] == 0.5 and r["delta_ex"] == 0.0 for r in rows)
    assert report["total"] == 2 and report["options"] == {  # the first run's: all stages on
        "style": "completion", "max_corrections": 1, "constrain": True, "pick_examples": True,
        **dict.fromkeys(optional, True), "candidates": 2,
    }  # fmt: skip
    assert png.read_bytes().startswith(b"\x89PNG")


def test_cli_switches_stages_off_and_prints_tables(tmp_path: Path, spider_set: tuple[Path, Path, Path]) -> None:
    questions, db_dir, config = spider_set
    result = CliRunner().invoke(
        cli_app,
        ["eval", "text2sql", "--questions", str(questions), "--db-dir", str(db_dir), "--limit", "2",
         "--no-constrain", "--no-pick-examples", "--no-values", "--no-verified", "--ablation",
         "--output", str(tmp_path / "preds.csv"), "--config", str(config), "--home", str(tmp_path / "home")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Every stage is off already: the ablation has only the run as configured.
    effects = result.stdout.split("stage effects")[1]
    assert "(as configured)" in effects and "ΔEX" in effects and "off in every run: constrain, pick_examples" in effects
    assert "wrong_table" in result.stdout and "zh" in result.stdout and "time per question: median" in result.stdout
    assert "as configured ·" in result.stderr  # the run's progress bar


def test_cli_examples_are_verified_pairs_reused_for_repeated_questions(
    tmp_path: Path, spider_set: tuple[Path, Path, Path]
) -> None:
    """``--examples``: a verified pair asking what q4 asks (under another marker) answers q4 with its SQL,
    without the scripted model's wrong answer; a file holding an evaluated question is refused."""
    examples = tmp_path / "examples.json"
    examples.write_text(
        json.dumps(
            [{"db_id": "sample", "question": "[q5] Which regions are there?", "query": "SELECT name FROM regions"}]
        ),
        encoding="utf-8",
    )
    report = _eval(tmp_path, spider_set, "--examples", str(examples))
    assert report["correct"] == 2 and report["executable_share"] == 1.0
    rows = list(csv.DictReader((tmp_path / "preds.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[3]["predicted"] == "SELECT name FROM regions" and rows[3]["attempts"] == "0"  # no model call

    questions, db_dir, config = spider_set
    examples.write_text(
        json.dumps([{"db_id": "sample", "question": "[q1] How many customers are there?", "query": "SELECT 1"}]),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli_app,
        ["eval", "text2sql", "--questions", str(questions), "--db-dir", str(db_dir), "--examples", str(examples),
         "--config", str(config), "--home", str(tmp_path / "home")],
    )  # fmt: skip
    assert result.exit_code != 0 and "question(s) being evaluated" in result.output + str(result.exception)

"""The held-out text-to-SQL set: its generated clinic database, its questions and ``eval --set heldout``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from datapilot.testing import write_config
from datapilot.text2sql import (
    HELDOUT_DB_ID,
    build_heldout_database,
    dev_set_path,
    difficulty_of,
    ensure_heldout_database,
    gold_orders,
    heldout_set_path,
    load_questions,
    results_match,
)
from datapilot.text2sql._eval import run_sqlite
from tests.text2sql.conftest import sha256

TABLES = ("clinics", "departments", "doctors", "patients", "appointments", "medications", "prescriptions")


@pytest.fixture(scope="module")
def clinic_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_heldout_database(tmp_path_factory.mktemp("heldout"))


def _is_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _conditions(node: exp.Expr | None) -> tuple[list[exp.Expr], int]:
    """A clause as Spider's parser sees it: a flat list of condition units, and how many ORs join them."""
    if node is None:
        return [], 0
    if isinstance(node, exp.Paren):
        return _conditions(node.this)
    if isinstance(node, exp.And | exp.Or):
        left, left_ors = _conditions(node.left)
        right, right_ors = _conditions(node.right)
        return left + right, left_ors + right_ors + isinstance(node, exp.Or)
    return [node], 0


def spider_hardness(sql: str) -> str:
    """Spider's ``eval_hardness`` (evaluation.py) on a sqlglot tree, quirks included: HAVING is no
    component, a NOT condition counts as an aggregate (its ``has_agg`` reads the cond unit's not-flag),
    only the outer query's parts count and each nested query or set operation adds one.
    ``difficulty_of`` approximates this; the held-out labels follow it exactly."""
    tree = sqlglot.parse_one(sql, read="sqlite")
    nested = 0
    while isinstance(tree, exp.SetOperation):  # Spider keeps the left query; the right one is nested
        nested += 1
        tree = tree.left
    assert isinstance(tree, exp.Select)
    joins = tree.args.get("joins") or []
    where, where_ors = _conditions(tree.args["where"].this if tree.args.get("where") else None)
    having, having_ors = _conditions(tree.args["having"].this if tree.args.get("having") else None)
    units = [c for j in joins for c in _conditions(j.args.get("on"))[0]] + where + having
    comp1 = sum(bool(tree.args.get(k)) for k in ("where", "group", "order", "limit")) + len(joins)
    comp1 += where_ors + having_ors + sum(isinstance(c.this if isinstance(c, exp.Not) else c, exp.Like) for c in units)
    nested += sum(1 for c in units for s in c.find_all(exp.Select) if s.find_ancestor(exp.Select) is tree)

    def has_agg(e: exp.Expr) -> bool:
        return any(a.find_ancestor(exp.Select) is tree for a in e.find_all(exp.AggFunc))

    order = tree.args.get("order")
    aggs = sum(has_agg(e) for e in tree.expressions) + sum(isinstance(c, exp.Not) for c in where + having)
    aggs += sum(has_agg(o) for o in order.expressions) if order else 0
    group = tree.args.get("group")
    others = (aggs > 1) + (len(tree.expressions) > 1) + (len(where) > 1) + bool(group and len(group.expressions) > 1)
    if comp1 <= 1 and others == 0 and nested == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and nested == 0) or (comp1 <= 2 and others < 2 and nested == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and nested == 0)
        or (2 < comp1 <= 3 and others <= 2 and nested == 0)
        or (comp1 <= 1 and others == 0 and nested <= 1)
    ):
        return "hard"
    return "extra"


def test_spider_hardness_follows_spiders_rules() -> None:
    assert spider_hardness("SELECT COUNT(*) FROM t WHERE a = 1") == "easy"
    assert spider_hardness("SELECT a, b FROM t") == "medium"
    assert spider_hardness("SELECT a FROM t GROUP BY a ORDER BY COUNT(*) DESC LIMIT 1") == "hard"
    assert spider_hardness("SELECT a FROM t WHERE b NOT IN (SELECT b FROM u)") == "hard"
    assert spider_hardness("SELECT a, b FROM t WHERE c > (SELECT AVG(c) FROM t)") == "extra"
    assert spider_hardness("SELECT a FROM t WHERE b = 1 INTERSECT SELECT a FROM t WHERE b = 2") == "hard"
    assert spider_hardness("SELECT a FROM t WHERE b = 1 AND c = 2 INTERSECT SELECT a FROM t") == "extra"


def test_the_database_builds_deterministically(tmp_path: Path) -> None:
    first = build_heldout_database(tmp_path / "a" / "clinic.sqlite")
    second = build_heldout_database(tmp_path / "b" / "clinic.sqlite")
    assert sha256(first) == sha256(second)
    con = sqlite3.connect(first)
    try:
        counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        cjk = [r[0] for r in con.execute("SELECT DISTINCT chief_complaint FROM appointments")]
    finally:
        con.close()
    assert counts["clinics"] == 4 and counts["departments"] == 7 and counts["patients"] == 180
    assert 200 <= counts["appointments"] <= 1000 and counts["prescriptions"] >= 200
    assert cjk and all(_is_cjk(c) for c in cjk)

    folder = tmp_path / "eval"
    path = ensure_heldout_database(folder)
    assert path == folder / HELDOUT_DB_ID / f"{HELDOUT_DB_ID}.sqlite"
    built = path.stat().st_mtime_ns
    assert ensure_heldout_database(folder).stat().st_mtime_ns == built  # current: kept
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 0")
    con.close()
    assert sha256(ensure_heldout_database(folder)) == sha256(first)  # outdated: rebuilt


def test_the_set_is_balanced_bilingual_and_labelled_by_spiders_rules() -> None:
    questions = load_questions(heldout_set_path())
    raw = json.loads(heldout_set_path().read_text(encoding="utf-8"))
    assert len(questions) == 60 and {q.db_id for q in questions} == {HELDOUT_DB_ID}
    assert Counter(q.difficulty for q in questions) == {"easy": 15, "medium": 18, "hard": 15, "extra": 12}
    assert Counter(item["language"] for item in raw) == {"en": 40, "zh": 20}
    for item in raw:
        assert _is_cjk(item["question"]) == (item["language"] == "zh"), item["question"]
        assert item["difficulty"] == spider_hardness(item["query"]), item["question"]
    # difficulty_of is a coarser approximation: where it differs, Spider's rules above decide.
    assert sum(q.difficulty == difficulty_of(q.query) for q in questions) >= 30
    dev = load_questions(dev_set_path())
    assert HELDOUT_DB_ID not in {q.db_id for q in dev}
    assert not {q.question for q in dev} & {q.question for q in questions}
    assert len({q.question for q in questions}) == 60


def test_every_gold_query_runs_and_is_deterministic(clinic_db: Path) -> None:
    shuffled = sqlite3.connect(f"file:{clinic_db}?mode=ro", uri=True)
    shuffled.execute("PRAGMA reverse_unordered_selects = ON")  # scans the other way: exposes order-dependence
    try:
        for q in load_questions(heldout_set_path()):
            rows = run_sqlite(clinic_db, q.query)
            assert rows, q.question
            assert results_match(shuffled.execute(q.query).fetchall(), rows, gold_orders(q.query)), q.question
            tree = sqlglot.parse_one(q.query, read="sqlite")
            limit, order = tree.args.get("limit"), tree.args.get("order")
            if limit is not None and order is not None:  # no tie across the LIMIT cut
                n = int(limit.expression.name)
                keys = tree.copy()
                keys.set("limit", None)
                keys.set("expressions", [o.this.copy() for o in order.expressions])
                ranked = shuffled.execute(keys.sql("sqlite")).fetchall()
                assert len(ranked) <= n or ranked[n - 1] != ranked[n], q.question
    finally:
        shuffled.close()


def test_cli_eval_runs_the_heldout_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, second = load_questions(heldout_set_path())[:2]
    # The scripted model answers the first two questions with their gold SQL (matched on the question).
    config = write_config(tmp_path / "datapilot.toml", [
        {"name": "sql", "backend": "scripted",
         "params": {"rules": [["on file", first.query], ["ended up cancelled", second.query]],
                    "replies": ["SELECT 1"]}}
    ])  # fmt: skip
    out_csv = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "datapilot", "eval", "text2sql", "--set", "heldout", "--limit", "2",
           "--output", str(out_csv), "--json", "--home", str(home), "--config", str(config)]  # fmt: skip
    ev = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "200"})
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    assert report["questions"] == str(heldout_set_path())
    assert report["total"] == 2 and report["correct"] == 2
    assert (home / "eval" / HELDOUT_DB_ID / f"{HELDOUT_DB_ID}.sqlite").is_file()
    assert out_csv.read_text(encoding="utf-8").count(HELDOUT_DB_ID) == 2

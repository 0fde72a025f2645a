"""The unseen text-to-SQL set: its generated university database, its hand-written questions and
``eval --set unseen``."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlglot
from typer.testing import CliRunner

from datapilot.cli.eval import EvalSet, _shipped_set
from datapilot.cli.main import app
from datapilot.testing import write_config
from datapilot.text2sql import (
    HELDOUT_DB_ID,
    UNSEEN_DB_ID,
    dev_set_path,
    difficulty_of,
    ensure_unseen_database,
    gold_orders,
    heldout_set_path,
    load_questions,
    results_match,
    unseen_set_path,
)
from datapilot.text2sql._eval import run_sqlite
from datapilot.text2sql._unseen import build_unseen_database
from tests.text2sql.conftest import sha256

TABLES = ("departments", "instructors", "classrooms", "terms", "courses", "sections", "students", "enrollments",
          "scholarships", "scholarship_awards")  # fmt: skip


@pytest.fixture(scope="module")
def university_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_unseen_database(tmp_path_factory.mktemp("unseen"))


def _is_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _table_digest(con: sqlite3.Connection, table: str) -> str:
    digest = hashlib.sha256()
    for row in con.execute(f"SELECT * FROM {table} ORDER BY rowid"):
        digest.update(repr(row).encode())
    return digest.hexdigest()


def _profile(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    con = sqlite3.connect(path)
    try:
        counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        digests = {t: _table_digest(con, t) for t in ("students", "sections", "enrollments", "scholarship_awards")}
    finally:
        con.close()
    return counts, digests


def test_the_database_builds_deterministically(tmp_path: Path) -> None:
    first = build_unseen_database(tmp_path / "a" / "university.sqlite")
    second = build_unseen_database(tmp_path / "b" / "university.sqlite")
    assert _profile(first) == _profile(second)
    assert sha256(first) == sha256(second)
    counts, _ = _profile(first)
    assert counts["departments"] == 8 and counts["courses"] == 41 and counts["students"] == 260
    assert 150 <= counts["sections"] <= 400 and 1000 <= counts["enrollments"] <= 6000
    assert counts["scholarship_awards"] >= 50

    folder = tmp_path / "eval"
    path = ensure_unseen_database(folder)
    assert path == folder / UNSEEN_DB_ID / f"{UNSEEN_DB_ID}.sqlite"
    built = path.stat().st_mtime_ns
    assert ensure_unseen_database(folder).stat().st_mtime_ns == built  # current: kept
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 0")
    con.close()
    assert sha256(ensure_unseen_database(folder)) == sha256(first)  # outdated: rebuilt


def test_the_schema_has_keys_comments_dates_and_chinese_values(university_db: Path) -> None:
    con = sqlite3.connect(university_db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        linked = {t for t in tables if con.execute(f"PRAGMA foreign_key_list({t})").fetchall()}
        ddl = " ".join(r[0] for r in con.execute("SELECT sql FROM sqlite_master WHERE type = 'table'"))
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        hometowns = [r[0] for r in con.execute("SELECT DISTINCT hometown FROM students")]
        titles = [r[0] for r in con.execute("SELECT title_zh FROM courses")]
        dates = [r[0] for r in con.execute("SELECT enrolled_on FROM enrollments UNION SELECT awarded_on FROM "
                                           "scholarship_awards UNION SELECT admitted_on FROM students")]  # fmt: skip
    finally:
        con.close()
    assert sorted(tables) == sorted(TABLES) and len(tables) >= 8
    assert len(linked) >= 5  # instructors, courses, sections, students, enrollments, scholarship_awards
    assert all(t in linked for t in ("sections", "enrollments", "students", "scholarship_awards"))
    assert ddl.count("--") >= 10 and ddl.count("PRIMARY KEY") == len(TABLES)
    assert len(hometowns) >= 10 and all(_is_cjk(h) for h in hometowns)
    assert all(_is_cjk(t) for t in titles)
    assert all(len(d) == 10 and d[4] == d[7] == "-" for d in dates)


def test_the_set_is_hand_written_bilingual_and_spread_over_difficulties() -> None:
    questions = load_questions(unseen_set_path())
    raw = json.loads(unseen_set_path().read_text(encoding="utf-8"))
    assert 48 <= len(questions) <= 60 and {q.db_id for q in questions} == {UNSEEN_DB_ID}
    languages = Counter(item["language"] for item in raw)
    assert set(languages) == {"en", "zh"} and abs(languages["zh"] * 3 - len(raw)) <= 3  # about a third Chinese
    for item in raw:
        assert set(item) == {"db_id", "question", "query", "difficulty", "language"}
        assert _is_cjk(item["question"]) == (item["language"] == "zh"), item["question"]
        assert item["difficulty"] == difficulty_of(item["query"]), item["question"]
    difficulties = Counter(q.difficulty for q in questions)
    assert set(difficulties) == {"easy", "medium", "hard", "extra"} and min(difficulties.values()) >= 8
    # Chinese questions name real Chinese values: hometowns and course titles.
    assert sum(_is_cjk(q.query) for q, item in zip(questions, raw, strict=True) if item["language"] == "zh") >= 8
    assert len({q.question for q in questions}) == len(questions)
    assert len({q.query for q in questions}) == len(questions)
    others = load_questions(dev_set_path()) + load_questions(heldout_set_path())
    assert UNSEEN_DB_ID not in {q.db_id for q in others} and HELDOUT_DB_ID != UNSEEN_DB_ID
    assert not {q.question for q in others} & {q.question for q in questions}


def test_every_gold_query_runs_with_a_non_trivial_deterministic_answer(university_db: Path) -> None:
    shuffled = sqlite3.connect(f"file:{university_db}?mode=ro", uri=True)
    shuffled.execute("PRAGMA reverse_unordered_selects = ON")  # scans the other way: exposes order-dependence
    try:
        for q in load_questions(unseen_set_path()):
            rows = run_sqlite(university_db, q.query)
            assert rows, q.question
            assert rows not in ([(0,)], [(None,)]), q.question
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


def test_the_cli_ships_the_unseen_set(tmp_path: Path) -> None:
    questions, build = _shipped_set(EvalSet.unseen)
    assert questions == unseen_set_path()
    assert build(tmp_path) == tmp_path / UNSEEN_DB_ID / f"{UNSEEN_DB_ID}.sqlite"

    done = CliRunner().invoke(app, ["eval", "text2sql", "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "unseen" in done.output and "never seen" in done.output

    home = tmp_path / "home"
    first, second = load_questions(unseen_set_path())[:2]
    # The scripted model answers the first question with its gold SQL (matched on the question), the second wrongly.
    assert "on leave right now" in first.question
    config = write_config(tmp_path / "datapilot.toml", [
        {"name": "sql", "backend": "scripted",
         "params": {"rules": [["on leave right now", first.query]], "replies": ["SELECT 1"]}}
    ])  # fmt: skip
    out_csv = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "datapilot", "eval", "text2sql", "--set", "unseen", "--limit", "2", "--corrections",
           "0", "--output", str(out_csv), "--json", "--home", str(home), "--config", str(config)]  # fmt: skip
    ev = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "200"})
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    assert report["questions"] == str(unseen_set_path())
    assert report["total"] == 2 and report["correct"] == 1, second.question
    assert (home / "eval" / UNSEEN_DB_ID / f"{UNSEEN_DB_ID}.sqlite").is_file()

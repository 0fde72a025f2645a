"""Spider-style evaluation (``start_evaluate``, ``exact_set_match``) and the baseline scores table.

A tiny Spider layout is built in tmp_path: two SQLite databases, tables.json, gold.txt and a
predictions file with a known mix of right and wrong predictions, so every figure is exact.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from datapilot.core.errors import InvalidRequestError
from datapilot.train import _evaluate, baseline
from datapilot.train._evaluate import exact_set_match, gold_literals, plug_values, remove_distinct, start_evaluate

SINGER_SCHEMA = {"singer": {"singer_id", "name", "country", "age"}, "concert": {"concert_id", "singer_id", "year"}}

# (gold SQL, db_id, prediction, exec correct with keep_distinct=False, exact-set match)
CASES: list[tuple[str, str, str, bool, bool]] = [
    # easy, correct
    ("SELECT count(*) FROM singer", "concert_singer", "SELECT COUNT(*) FROM singer", True, True),
    # easy, wrong value: executes to other rows, but exact match ignores values
    ("SELECT name FROM singer WHERE country = 'France'", "concert_singer",
     "SELECT name FROM singer WHERE country = 'Japan'", False, True),
    # easy, wrong column
    ("SELECT name, age FROM singer WHERE age > 35", "concert_singer",
     "SELECT name, country FROM singer WHERE age > 35", False, False),
    # medium, not executable (no such column)
    ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014",
     "concert_singer",
     "SELECT T1.nme FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014",
     False, False),
    # easy, columns in another order (ordered result): right for both measures
    ("SELECT name, country FROM singer ORDER BY age DESC", "concert_singer",
     "SELECT country, name FROM singer ORDER BY age DESC", True, True),
    # easy, DISTINCT missing: right only because keep_distinct is false
    ("SELECT DISTINCT country FROM singer", "concert_singer", "SELECT country FROM singer", True, True),
    # easy, a query that never ends: timed out, wrong
    ("SELECT count(*) FROM concert WHERE year = 2014", "concert_singer",
     "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", False, False),
    # hard, right with aliases and an explicit ASC
    ("SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year = 2014) ORDER BY age",
     "concert_singer",
     "SELECT T.name FROM singer AS T WHERE T.singer_id IN (SELECT singer_id FROM concert WHERE year = 2014) "
     "ORDER BY T.age ASC", True, True),
    # extra, UNION the other way round
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) UNION "
     "SELECT name FROM singer WHERE country = 'Japan'", "concert_singer",
     "SELECT name FROM singer WHERE country = 'Japan' UNION "
     "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", True, True),
    # extra, EXCEPT the other way round: wrong
    ("SELECT country FROM singer GROUP BY country HAVING count(*) > 1 EXCEPT "
     "SELECT country FROM singer WHERE age < 30", "concert_singer",
     "SELECT country FROM singer WHERE age < 30 EXCEPT "
     "SELECT country FROM singer GROUP BY country HAVING count(*) > 1", False, False),
    # medium, aggregates in another order
    ("SELECT country, count(*), max(age) FROM singer GROUP BY country", "concert_singer",
     "SELECT country, max(age), count(*) FROM singer GROUP BY country", True, True),
    # medium, does not parse
    ("SELECT T2.year FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T1.name = 'Ann'",
     "concert_singer", "SELECT year FROM concert JOIN singer WHERE", False, False),
    # easy, second database, qualified column
    ("SELECT count(*) FROM pets WHERE weight > 10", "pets_1", "SELECT count(*) FROM pets WHERE pets.weight > 10",
     True, True),
]  # fmt: skip


def _database(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True)
    con = sqlite3.connect(path)
    con.executescript(script)
    con.commit()
    con.close()


@pytest.fixture
def spider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Spider's layout: database/<db_id>/<db_id>.sqlite, tables.json, gold.txt and pred.sql."""
    monkeypatch.setattr(_evaluate, "_TIMEOUT_S", 0.5)
    db = tmp_path / "database"
    _database(
        db / "concert_singer" / "concert_singer.sqlite",
        """
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER, year INTEGER);
        INSERT INTO singer VALUES (1, 'Ann', 'France', 30), (2, 'Bob', 'France', 40), (3, 'Cid', 'Japan', 25),
                                  (4, 'Dee', 'Chile', 52);
        INSERT INTO concert VALUES (1, 1, 2014), (2, 1, 2015), (3, 3, 2014);
        """,
    )
    _database(
        db / "pets_1" / "pets_1.sqlite",
        """
        CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, pet_type TEXT, weight REAL);
        INSERT INTO pets VALUES (1, 'cat', 4.5), (2, 'dog', 12.0), (3, 'dog', 30.2);
        """,
    )
    tables = [
        {
            "db_id": "concert_singer",
            "table_names_original": ["singer", "concert"],
            "column_names_original": [[-1, "*"], [0, "Singer_ID"], [0, "Name"], [0, "Country"], [0, "Age"],
                                      [1, "Concert_ID"], [1, "Singer_ID"], [1, "Year"]],
        },
        {
            "db_id": "pets_1",
            "table_names_original": ["Pets"],
            "column_names_original": [[-1, "*"], [0, "PetID"], [0, "PetType"], [0, "weight"]],
        },
    ]  # fmt: skip
    (tmp_path / "tables.json").write_text(json.dumps(tables), encoding="utf-8")
    (tmp_path / "gold.txt").write_text("".join(f"{g}\t{d}\n" for g, d, *_ in CASES), encoding="utf-8")
    (tmp_path / "pred.sql").write_text("".join(f"{p}\n" for _, _, p, *_ in CASES), encoding="utf-8")
    return {
        "input": str(tmp_path / "pred.sql"),
        "gold": str(tmp_path / "gold.txt"),
        "gold_natsql": str(tmp_path / "gold_natsql2sql.txt"),  # absent: ignored without natsql
        "db": str(db),
        "table": str(tmp_path / "tables.json"),
        "table_natsql": str(tmp_path / "tables_for_natsql2sql.json"),
        "etype": "all",
        "plug_value": True,
        "keep_distict": False,
        "progress_bar_for_each_datapoint": False,
        "natsql": False,
    }


def _figures(scores: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {level: (s["count"], s["correct"]) for level, s in scores.items()}


def test_exact_figures_per_difficulty(spider: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    result = start_evaluate(spider)
    assert time.monotonic() - started < 5  # the never-ending prediction was cut off

    assert set(result) == {"exec", "match", "items"}
    assert _figures(result["exec"]) == {
        "easy": (7, 4), "medium": (3, 1), "hard": (1, 1), "extra": (2, 1), "all": (13, 7),
    }  # fmt: skip
    assert _figures(result["match"]) == {
        "easy": (7, 5), "medium": (3, 1), "hard": (1, 1), "extra": (2, 1), "all": (13, 8),
    }  # fmt: skip
    assert result["exec"]["all"]["accuracy"] == pytest.approx(7 / 13)
    assert result["match"]["easy"]["accuracy"] == pytest.approx(5 / 7)

    items = result["items"]
    assert [i["exec"] for i in items] == [c[3] for c in CASES]
    assert [i["match"] for i in items] == [c[4] for c in CASES]
    assert [i["index"] for i in items] == list(range(len(CASES)))
    assert items[-1]["db_id"] == "pets_1" and items[7]["difficulty"] == "hard"
    assert items[0]["error"] is None
    assert "timed out" in items[6]["error"]
    assert "nme" in items[3]["error"]
    assert items[11]["error"]  # does not parse

    out = capsys.readouterr().out
    assert "EXECUTION ACCURACY" in out and "EXACT MATCHING ACCURACY" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("easy"))
    assert header.split() == ["easy", "medium", "hard", "extra", "all"]
    count_row = next(line for line in out.splitlines() if line.startswith("count"))
    assert count_row.split() == ["count", "7", "3", "1", "2", "13"]
    execution = next(line for line in out.splitlines() if line.startswith("execution"))
    assert execution.split()[-1] == f"{7 / 13:.3f}"


def test_keep_distinct_and_single_types(spider: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    del spider["keep_distict"]
    exec_only = start_evaluate({**spider, "etype": "exec", "keep_distinct": True})
    assert set(exec_only) == {"exec", "items"}
    assert _figures(exec_only["exec"])["easy"] == (7, 3)  # SELECT country now returns France twice
    assert exec_only["items"][5]["match"] is None
    match_only = start_evaluate({**spider, "etype": "match", "keep_distict": True})
    assert set(match_only) == {"match", "items"}
    assert _figures(match_only["match"])["easy"] == (7, 4)  # the SELECT-level DISTINCT now counts
    assert match_only["items"][5]["exec"] is None
    out = capsys.readouterr().out
    assert "EXECUTION ACCURACY" in out and "EXACT MATCHING ACCURACY" in out


def test_progress_bar(spider: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    result = start_evaluate({**spider, "etype": "match", "progress_bar_for_each_datapoint": True})
    assert result["match"]["all"]["correct"] == 8
    assert "count" in capsys.readouterr().out


def test_plug_value(spider: dict[str, Any], tmp_path: Path) -> None:
    gold = "SELECT name FROM singer WHERE country = 'Japan' AND age > 20"
    (tmp_path / "gold.txt").write_text(f"{gold}\tconcert_singer\n", encoding="utf-8")
    (tmp_path / "pred.sql").write_text(
        'SELECT name FROM singer WHERE country = "value" AND age > value\tconcert_singer\n', encoding="utf-8"
    )
    args = {**spider, "etype": "exec"}
    assert start_evaluate({**args, "plug_value": True})["exec"]["all"]["correct"] == 1
    assert start_evaluate({**args, "plug_value": False})["exec"]["all"]["correct"] == 0


def test_plug_values_and_distinct_helpers() -> None:
    gold = 'SELECT name FROM t WHERE a = "France" AND b BETWEEN -1 AND 2.5 AND c IN (1, 2) LIMIT 3'
    pred = "SELECT name FROM t WHERE a = 'value' AND b BETWEEN value AND value AND c IN (value, value) LIMIT value"
    assert gold_literals(gold) == ["'France'", "-1", "2.5", "1", "2", "3"]
    assert plug_values(pred, gold) == (
        "SELECT name FROM t WHERE a = 'France' AND b BETWEEN -1 AND 2.5 AND c IN (1, 2) LIMIT 3"
    )
    # Real values (DataPilot's predictions) and a column named value stay as they are.
    assert plug_values("SELECT value FROM t WHERE a = 'Paris'", gold) == "SELECT value FROM t WHERE a = 'Paris'"
    assert plug_values("SELECT name FROM t WHERE a = 'terminal'", "SELECT name FROM t WHERE a = 'it''s'") == (
        "SELECT name FROM t WHERE a = 'it''s'"
    )
    assert remove_distinct("SELECT DISTINCT count(DISTINCT a) FROM t WHERE b = 'distinct'") == (
        "SELECT  count( a) FROM t WHERE b = 'distinct'"
    )


# --- exact-set match -------------------------------------------------------------------------------


def test_aliases_resolve_to_tables() -> None:
    gold = "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014"
    pred = "SELECT singer.name FROM concert JOIN singer ON concert.singer_id = singer.singer_id WHERE year = 1999"
    assert exact_set_match(pred, gold, schema=SINGER_SCHEMA)
    # Without a schema "year" could be either table's column.
    assert not exact_set_match(pred, gold)
    assert exact_set_match("SELECT Name FROM SINGER", "select s.name from singer as s")  # one table: unambiguous
    assert not exact_set_match("SELECT name FROM concert", "SELECT name FROM singer")


def test_conditions_compare_as_sets_values_ignored() -> None:
    gold = "SELECT name FROM singer WHERE age > 30 AND country = 'France'"
    assert exact_set_match('SELECT name FROM singer WHERE country = "Chile" AND 18 < age', gold)
    assert not exact_set_match("SELECT name FROM singer WHERE age > 30 OR country = 'France'", gold)
    assert not exact_set_match("SELECT name FROM singer WHERE age < 30 AND country = 'France'", gold)
    assert not exact_set_match("SELECT name FROM singer WHERE age > 30 AND country != 'France'", gold)
    assert not exact_set_match("SELECT name FROM singer WHERE age > 30", gold)
    assert exact_set_match(
        "SELECT name FROM singer WHERE name LIKE '%a%' AND age BETWEEN 1 AND 2",
        "SELECT name FROM singer WHERE age BETWEEN 20 AND 40 AND name LIKE '%x'",
    )
    assert exact_set_match("SELECT count(*) FROM singer", "SELECT COUNT(*) FROM singer")
    assert not exact_set_match("SELECT count(DISTINCT name) FROM singer", "SELECT count(name) FROM singer")
    assert not exact_set_match("SELECT max(age) FROM singer", "SELECT min(age) FROM singer")


def test_order_by_direction_and_limit() -> None:
    gold = "SELECT name FROM singer ORDER BY age DESC LIMIT 1"
    assert exact_set_match("SELECT name FROM singer ORDER BY age DESC LIMIT 3", gold)  # LIMIT value ignored
    assert not exact_set_match("SELECT name FROM singer ORDER BY age LIMIT 1", gold)  # direction matters
    assert not exact_set_match("SELECT name FROM singer ORDER BY age DESC", gold)  # LIMIT presence matters
    assert exact_set_match(
        "SELECT country, count(*) AS n FROM singer GROUP BY country ORDER BY n DESC",
        "SELECT country, COUNT(*) FROM singer GROUP BY country ORDER BY count(*) DESC",
    )
    assert not exact_set_match(
        "SELECT country FROM singer GROUP BY country", "SELECT country FROM singer GROUP BY country HAVING count(*) > 1"
    )


def test_set_operations_and_subqueries() -> None:
    a, b = "SELECT name FROM singer WHERE age > 1", "SELECT name FROM singer WHERE country = 'x'"
    assert exact_set_match(f"{b} UNION {a}", f"{a} UNION {b}")
    assert exact_set_match(f"{b} INTERSECT {a}", f"{a} INTERSECT {b}")
    assert not exact_set_match(f"{b} EXCEPT {a}", f"{a} EXCEPT {b}")
    assert not exact_set_match(f"{a} UNION {b}", f"{a} INTERSECT {b}")
    assert not exact_set_match(f"{a} UNION ALL {b}", f"{a} UNION {b}")
    gold = "SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM concert WHERE year = 2014)"
    assert exact_set_match(
        "SELECT name FROM singer WHERE singer_id NOT IN (SELECT c.singer_id FROM concert AS c WHERE c.year = 1)", gold
    )
    assert not exact_set_match(
        "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year = 2014)", gold
    )
    assert not exact_set_match(
        "SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM concert WHERE year > 2014)", gold
    )
    assert exact_set_match(
        "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
        "SELECT name FROM singer WHERE age > (SELECT AVG(s.age) FROM singer AS s)",
    )


def test_distinct_and_unparseable() -> None:
    assert not exact_set_match("SELECT country FROM singer", "SELECT DISTINCT country FROM singer")
    assert exact_set_match("SELECT country FROM singer", "SELECT DISTINCT country FROM singer", keep_distinct=False)
    assert not exact_set_match("SELECT name FROM WHERE", "SELECT name FROM singer")
    assert not exact_set_match("", "SELECT name FROM singer")
    assert not exact_set_match("SELECT 1; SELECT 2", "SELECT 1")


# --- bad arguments -----------------------------------------------------------------------------------


def test_unknown_key_is_named(spider: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        start_evaluate({**spider, "etpye": "exec"})
    assert "etpye" in info.value.message and "etype" in info.value.message and "keep_distinct" in info.value.message


def test_natsql_is_refused(spider: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="natsql is not supported"):
        start_evaluate({**spider, "natsql": True})


def test_missing_paths_are_named(spider: dict[str, Any], tmp_path: Path) -> None:
    for key in ("input", "gold", "table"):
        missing = str(tmp_path / f"no-{key}")
        with pytest.raises(InvalidRequestError, match=f"no-{key}"):
            start_evaluate({**spider, key: missing})
    with pytest.raises(InvalidRequestError, match="no-db"):
        start_evaluate({**spider, "db": str(tmp_path / "no-db")})
    with pytest.raises(InvalidRequestError, match="'db'"):
        start_evaluate({k: v for k, v in spider.items() if k != "db"})
    (tmp_path / "gold.txt").write_text("SELECT 1\tno_such_db\n", encoding="utf-8")
    (tmp_path / "pred.sql").write_text("SELECT 1\n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="no_such_db"):
        start_evaluate(spider)


def test_line_count_mismatch(spider: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "pred.sql").write_text("SELECT 1\nSELECT 2\n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=f"2 predictions but the gold file has {len(CASES)}"):
        start_evaluate(spider)


def test_bad_etype_and_flags(spider: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="etype"):
        start_evaluate({**spider, "etype": "accuracy"})
    with pytest.raises(InvalidRequestError, match="plug_value"):
        start_evaluate({**spider, "plug_value": "yes"})
    with pytest.raises(InvalidRequestError, match="disagree"):
        start_evaluate({**spider, "keep_distict": True, "keep_distinct": False})


# --- baseline scores -----------------------------------------------------------------------------------

ROW = {"model": "qwen2.5-0.5b", "method": "lora", "dataset": "spider", "etype": "exec",
       "easy": 0.7, "medium": 0.5, "hard": 0.4, "extra": 0.2, "all": 0.5, "note": "test"}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shipped = tmp_path / "baseline.json"
    shipped.write_text("[]\n", encoding="utf-8")
    monkeypatch.setattr(baseline, "BASELINE_FILE", shipped)
    monkeypatch.setenv("DATAPILOT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_shipped_baseline_is_valid() -> None:
    rows = json.loads(baseline.BASELINE_FILE.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows  # the measured base and fine-tuned embedded models
    assert [baseline.check_row(row) for row in rows] == rows


def test_no_scores(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert baseline.show_scores() == []
    assert "no scores yet: run `datapilot train text2sql`" in capsys.readouterr().out


def test_record_then_show(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline.record_score(ROW)
    baseline.record_score({**ROW, "method": "base", "all": 0.3, "note": ""})
    assert json.loads((home / "train" / "scores.json").read_text(encoding="utf-8"))[0] == ROW
    rows = baseline.show_scores()
    assert rows[0] == ROW and rows[1]["method"] == "base"
    out = capsys.readouterr().out
    assert "qwen2.5-0.5b" in out and "0.700" in out
    assert list((home / "train").iterdir()) == [home / "train" / "scores.json"]  # no temporary file left


def test_record_score_checks_rows(home: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="method"):
        baseline.record_score({**ROW, "method": "prefix"})
    with pytest.raises(InvalidRequestError, match="between 0 and 1"):
        baseline.record_score({**ROW, "all": 51.2})
    with pytest.raises(InvalidRequestError, match="unknown score key"):
        baseline.record_score({**ROW, "extra_hard": 0.1})
    other = tmp_path / "other"
    baseline.record_score(ROW, home=other)
    assert baseline.show_scores(home=other) == [ROW]
    assert baseline.show_scores() == []

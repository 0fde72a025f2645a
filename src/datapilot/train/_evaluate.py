"""Spider-style evaluation of a predictions file, the equivalent of DB-GPT-Hub's ``start_evaluate``.

``start_evaluate(evaluate_args)`` takes the reference's arguments::

    {"input": "pred.sql",          # predictions, one SQL per line, in the gold's order
     "gold": "gold.txt",           # one line per question: "<gold SQL>\\t<db_id>"
     "db": "spider/database",      # <db>/<db_id>/<db_id>.sqlite
     "table": "tables.json",       # Spider's tables.json (optional: resolves unqualified columns for "match")
     "etype": "exec",              # "exec" | "match" | "all"
     "plug_value": False, "keep_distict": False, "progress_bar_for_each_datapoint": False,
     "natsql": False, "gold_natsql": ..., "table_natsql": ...}

and scores every prediction, by Spider's hardness levels (``difficulty_of``):

* ``exec`` (execution accuracy): prediction and gold run on a read-only connection to the question's
  SQLite database, each within ``_TIMEOUT_S`` seconds (a prediction that runs longer counts as wrong),
  and their results compare with ``results_match`` (in order only when the gold has a top-level
  ORDER BY). With ``keep_distinct`` false (the default, as in Spider's evaluator) every DISTINCT is
  removed from both queries before they run. ``plug_value``: Spider's models predicted SQL with the
  placeholder ``value`` (or ``'terminal'``) instead of literals, and its evaluator plugged the gold's
  values in. DataPilot's predictions hold real values, so the key has no effect on them; when it is
  true and a prediction does hold placeholders, the gold's literals replace them in order
  (``plug_values``).
* ``match`` (exact-set match, ``exact_set_match``): both queries parsed with sqlglot and compared
  clause by clause, values ignored: the SELECT items (aggregates included), the FROM tables (joined
  ones too, aliases resolved), the WHERE and HAVING conditions as multisets plus the set of AND/OR
  connectors, GROUP BY, ORDER BY (items in order, each with its direction), whether there is a
  LIMIT (not its value), set operations and subqueries, compared recursively. As in Spider, join
  conditions are not compared, nor is a SELECT-level DISTINCT when ``keep_distinct`` is false
  (DISTINCT inside an aggregate always is). UNION and INTERSECT compare either way round.

The result is ``{"exec": {...}, "match": {...}, "items": [...]}`` (the requested types only): per
level ``{"count", "correct", "accuracy"}`` for easy, medium, hard, extra and all; the same figures are
printed as Spider's evaluator prints them. NatSQL is not supported.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.datasource import check_read_only
from datapilot.text2sql import (
    DIFFICULTIES,
    GOLD_TIMEOUT_S,
    database_path,
    difficulty_of,
    gold_orders,
    results_match,
    run_sqlite,
)

# Seconds each query (gold or predicted) may run; tests lower it.
_TIMEOUT_S = GOLD_TIMEOUT_S

ETYPES = ("exec", "match", "all")
LEVELS = (*DIFFICULTIES, "all")
_PATH_KEYS = ("input", "gold", "gold_natsql", "db", "table", "table_natsql")
_FLAG_KEYS = ("plug_value", "keep_distict", "keep_distinct", "progress_bar_for_each_datapoint", "natsql")
ACCEPTED_KEYS = (*_PATH_KEYS, "etype", *_FLAG_KEYS)

Schema = Mapping[str, Collection[str]]  # table -> its columns, names lower-cased


# --- arguments -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Args:
    input: Path
    gold: Path
    db: Path | None
    table: Path | None
    etype: str
    plug_value: bool
    keep_distinct: bool
    progress: bool

    @property
    def types(self) -> tuple[str, ...]:
        return ("exec", "match") if self.etype == "all" else (self.etype,)


def _flag(args: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequestError(f"evaluate_args[{key!r}] must be true or false, not {value!r}", param=key)
    return value


def _path(args: Mapping[str, Any], key: str, what: str, *, folder: bool = False) -> Path | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise InvalidRequestError(f"evaluate_args[{key!r}] must be a path, not {value!r}", param=key)
    path = Path(value).expanduser()
    if folder and not path.is_dir():
        raise InvalidRequestError(f"evaluate_args[{key!r}]: {what} {path} is not a folder (or does not exist)",
                                  param=key)  # fmt: skip
    if not folder and not path.is_file():
        raise InvalidRequestError(f"evaluate_args[{key!r}]: {what} {path} does not exist", param=key)
    return path


def _parse_args(evaluate_args: Mapping[str, Any]) -> _Args:
    if not isinstance(evaluate_args, Mapping):
        raise InvalidRequestError(f"evaluate_args must be a dict, not {type(evaluate_args).__name__}")
    unknown = sorted(str(k) for k in evaluate_args if k not in ACCEPTED_KEYS)
    if unknown:
        raise InvalidRequestError(
            f"unknown evaluate_args key(s): {', '.join(unknown)}; accepted keys: {', '.join(ACCEPTED_KEYS)}"
        )
    if _flag(evaluate_args, "natsql"):
        raise InvalidRequestError(
            "natsql is not supported: evaluate plain SQL predictions with natsql=False", param="natsql"
        )
    etype = evaluate_args.get("etype", "exec")
    if etype not in ETYPES:
        raise InvalidRequestError(f"evaluate_args['etype'] must be one of {', '.join(ETYPES)}, not {etype!r}",
                                  param="etype")  # fmt: skip
    spellings = {k: _flag(evaluate_args, k) for k in ("keep_distict", "keep_distinct") if k in evaluate_args}
    if len(set(spellings.values())) > 1:
        raise InvalidRequestError("keep_distict and keep_distinct disagree: give one of them", param="keep_distinct")
    for key, what in (("input", "the predictions file"), ("gold", "the gold file")):
        if evaluate_args.get(key) in (None, ""):
            raise InvalidRequestError(f"evaluate_args lacks {key!r} ({what})", param=key)
    if etype != "match" and evaluate_args.get("db") in (None, ""):
        raise InvalidRequestError(
            "evaluate_args lacks 'db' (the folder of databases, <db>/<db_id>/<db_id>.sqlite), which etype "
            f"{etype!r} needs to run the queries",
            param="db",
        )
    input_path = _path(evaluate_args, "input", "the predictions file")
    gold_path = _path(evaluate_args, "gold", "the gold file")
    assert input_path is not None and gold_path is not None  # checked above
    return _Args(
        input=input_path,
        gold=gold_path,
        db=_path(evaluate_args, "db", "the databases folder", folder=True),
        table=_path(evaluate_args, "table", "the tables file"),
        etype=etype,
        plug_value=_flag(evaluate_args, "plug_value"),
        keep_distinct=next(iter(spellings.values()), False),
        progress=_flag(evaluate_args, "progress_bar_for_each_datapoint"),
    )


def _read_gold(path: Path) -> list[tuple[str, str]]:
    """(SQL, db_id) per non-blank line of ``path``."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue  # Spider separates interactions with blank lines
        sql, tab, db_id = line.rstrip("\r\n").rpartition("\t")
        if not tab or not sql.strip() or not db_id.strip():
            raise InvalidRequestError(f"{path}, line {number}: expected '<gold SQL><TAB><db_id>', got {line[:80]!r}")
        out.append((sql.strip(), db_id.strip()))
    if not out:
        raise InvalidRequestError(f"{path} holds no gold queries")
    return out


def _read_predictions(path: Path, gold: Sequence[tuple[str, str]]) -> list[str]:
    """One SQL per line (a blank line is an empty prediction); a trailing "<TAB><db_id>" is dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(gold):
        while lines and not lines[-1].strip():
            lines.pop()
    if len(lines) != len(gold):
        raise InvalidRequestError(
            f"{path} has {len(lines)} predictions but the gold file has {len(gold)} questions: write one SQL "
            "per line, in the gold file's order"
        )
    out = []
    for line, (_, db_id) in zip(lines, gold, strict=True):
        sql, tab, tail = line.rpartition("\t")
        out.append((sql if tab and tail.strip() == db_id else line).strip())
    return out


def load_schemas(path: Path) -> dict[str, dict[str, frozenset[str]]]:
    """db_id -> table -> columns (lower-cased) from Spider's tables.json (the ``*_original`` names)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        schemas: dict[str, dict[str, frozenset[str]]] = {}
        for db in data:
            tables = [str(t).lower() for t in db.get("table_names_original") or db["table_names"]]
            columns: dict[str, set[str]] = {t: set() for t in tables}
            for index, name in db.get("column_names_original") or db["column_names"]:
                if 0 <= index < len(tables):
                    columns[tables[index]].add(str(name).lower())
            schemas[str(db["db_id"])] = {t: frozenset(c) for t, c in columns.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequestError(f"{path} is not a Spider tables.json ({type(exc).__name__}: {exc})") from None
    return schemas


# --- SQL text helpers --------------------------------------------------------------------------------


def _tokens(sql: str) -> list[Token] | None:
    try:
        return list(sqlglot.tokenize(sql, read="sqlite"))
    except SqlglotError:
        return None


def remove_distinct(sql: str) -> str:
    """``sql`` without its DISTINCT keywords (Spider's evaluator does this unless told to keep them)."""
    tokens = _tokens(sql)
    if tokens is None:
        return sql
    out = sql
    for tok in reversed([t for t in tokens if t.token_type == TokenType.DISTINCT]):
        out = out[: tok.start] + out[tok.end + 1 :]
    return out


_PLACEHOLDERS = ("value", "terminal")
_BEFORE_VALUE = {
    TokenType.EQ, TokenType.NEQ, TokenType.LT, TokenType.GT, TokenType.LTE, TokenType.GTE, TokenType.LIKE,
    TokenType.ILIKE, TokenType.GLOB, TokenType.BETWEEN, TokenType.LIMIT, TokenType.OFFSET,
}  # fmt: skip


def _placeholder_spans(tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """Where Spider's placeholders stand: any string 'value' / 'terminal'; "value" or bare value where
    a literal goes (after a comparison, LIKE, BETWEEN ... AND, LIMIT, inside IN (...))."""
    spans: list[tuple[int, int]] = []
    marked: set[int] = set()
    for i, tok in enumerate(tokens):
        text = tok.text.lower()
        if tok.token_type == TokenType.STRING and text in _PLACEHOLDERS:
            hit = True
        elif tok.token_type in (TokenType.IDENTIFIER, TokenType.VAR) and text == "value" and i > 0:
            prev = tokens[i - 1].token_type
            hit = (
                prev in _BEFORE_VALUE
                or (prev == TokenType.L_PAREN and i > 1 and tokens[i - 2].token_type == TokenType.IN)
                or (prev == TokenType.COMMA and i - 2 in marked)
                or (
                    prev == TokenType.AND
                    and i - 2 in marked
                    and i > 2
                    and tokens[i - 3].token_type == TokenType.BETWEEN
                )
            )
        else:
            hit = False
        if hit:
            marked.add(i)
            spans.append((tok.start, tok.end))
    return spans


def _is_value_identifier(col: exp.Column, schema_columns: Collection[str] | None = None) -> bool:
    """A double-quoted name that SQLite reads as a string ("Paris" in ``name = "Paris"``): unqualified,
    where a literal goes, and not a column the schema knows."""
    ident = col.this
    if not isinstance(ident, exp.Identifier) or not ident.quoted or col.table:
        return False
    if schema_columns is not None and ident.name.lower() in schema_columns:
        return False
    parent = col.parent
    if isinstance(parent, exp.In):
        return col in parent.expressions
    if isinstance(parent, exp.Between):
        return col is not parent.this
    return isinstance(parent, exp.Binary) and not isinstance(parent, exp.Connector) and col is parent.expression


def gold_literals(sql: str, schema: Schema | None = None) -> list[str]:
    """The literals of ``sql`` as SQL text, in the order they appear (a double-quoted string counts)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return []
    columns = {c for cols in schema.values() for c in cols} if schema else None
    found: list[tuple[int, int, str]] = []
    for order, node in enumerate(tree.walk(bfs=False)):
        if isinstance(node, exp.Literal):
            text = node.sql(dialect="sqlite")
            if isinstance(node.parent, exp.Neg):
                text = "-" + text
        elif isinstance(node, exp.Column) and _is_value_identifier(node, columns):
            text = "'" + node.name.replace("'", "''") + "'"
        else:
            continue
        meta = node.this.meta if isinstance(node, exp.Column) else node.meta
        found.append((int(meta.get("start", order)) if meta else order, order, text))
    return [text for _, _, text in sorted(found)]


def plug_values(pred_sql: str, gold_sql: str, schema: Schema | None = None) -> str:
    """``pred_sql`` with Spider's placeholders (``'value'``, ``"value"``, a bare ``value`` where a
    literal goes, ``'terminal'``) replaced by the gold's literals, in order. A prediction without
    placeholders (DataPilot's hold real values) comes back unchanged."""
    tokens = _tokens(pred_sql)
    if not tokens:
        return pred_sql
    spans = _placeholder_spans(tokens)
    if not spans:
        return pred_sql
    values = gold_literals(gold_sql, schema)
    out = pred_sql
    for (start, end), value in reversed(list(zip(spans, values, strict=False))):
        out = out[:start] + value + out[end + 1 :]
    return out


# --- exact-set match ---------------------------------------------------------------------------------


Unit = Hashable  # a table name, or ("query", canonical form) for a subquery or CTE


@dataclass(slots=True)
class _Scope:
    schema: Schema | None
    keep_distinct: bool
    parent: _Scope | None = None
    units: dict[str, Unit] = field(default_factory=dict)  # alias or name -> unit
    sub_columns: dict[Unit, frozenset[str]] = field(default_factory=dict)  # a subquery's output names
    ctes: dict[str, Unit] = field(default_factory=dict)
    outputs: dict[str, exp.Expression] = field(default_factory=dict)  # SELECT aliases

    def cte(self, name: str) -> Unit | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None

    def columns_of(self, unit: Unit) -> Collection[str] | None:
        if unit in self.sub_columns:
            return self.sub_columns[unit]
        if isinstance(unit, str) and self.schema is not None and unit in self.schema:
            return self.schema[unit]
        return None

    def known(self, name: str) -> bool:
        """Whether the schema confirms ``name`` as a column of a table in this or an enclosing scope."""
        scope: _Scope | None = self
        while scope is not None:
            if any(name in (scope.columns_of(u) or ()) for u in scope.units.values()):
                return True
            scope = scope.parent
        return False

    def resolve(self, name: str) -> Unit | None:
        """The table an unqualified column belongs to, when that is unambiguous."""
        scope: _Scope | None = self
        while scope is not None:
            units = set(scope.units.values())
            hits = {u for u in units if name in (scope.columns_of(u) or ())}
            if len(hits) == 1:
                return hits.pop()
            if hits:
                return None  # ambiguous
            if any(scope.columns_of(u) is None for u in units):
                # Some table's columns are unknown: a lone table is the column's, otherwise nobody knows.
                return next(iter(units)) if len(units) == 1 else None
            scope = scope.parent
        return None

    def qualifier(self, alias: str) -> Unit:
        scope: _Scope | None = self
        while scope is not None:
            if alias in scope.units:
                return scope.units[alias]
            scope = scope.parent
        return alias


def _sorted(items: Iterator[Hashable] | Sequence[Hashable]) -> tuple[Hashable, ...]:
    return tuple(sorted(items, key=repr))


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _is_value(node: exp.Expression) -> bool:
    node = _unparen(node)
    if isinstance(node, exp.Neg):
        node = _unparen(node.this)
    return isinstance(node, exp.Literal | exp.Boolean)


_FLIPPED: dict[type[exp.Expression], type[exp.Expression]] = {exp.LT: exp.GT, exp.LTE: exp.GTE}
_COMMUTATIVE = (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.Add, exp.Mul)


def _expr(node: exp.Expression, scope: _Scope, *, outputs: bool = False) -> Hashable:
    """A canonical, hashable form of an expression: columns resolved to their tables, values erased.
    ``outputs``: a bare name may be a SELECT alias (in GROUP BY, HAVING, ORDER BY)."""
    node = _unparen(node)
    if isinstance(node, exp.Alias):
        return _expr(node.this, scope, outputs=outputs)
    if _is_value(node):
        return ("value",)
    if isinstance(node, exp.Null):
        return ("null",)
    if isinstance(node, exp.Star):
        return ("col", None, "*")
    if isinstance(node, exp.Column):
        return _column(node, scope, outputs)
    if isinstance(node, exp.Subquery | exp.Query):
        return ("query", _canon_query(node, scope.schema, scope.keep_distinct, scope))
    if isinstance(node, exp.In):
        if node.args.get("query") is not None:
            target: Hashable = _expr(node.args["query"], scope)
        elif all(_is_value(e) or _is_value_column(e, scope) for e in node.expressions):
            target = ("values",)
        else:
            target = _sorted(_expr(e, scope, outputs=outputs) for e in node.expressions)
        return ("in", _expr(node.this, scope, outputs=outputs), target)
    if isinstance(node, exp.GT | exp.GTE | exp.LT | exp.LTE):  # "a < b" is "b > a"
        left, right = _expr(node.this, scope, outputs=outputs), _expr(node.expression, scope, outputs=outputs)
        if type(node) in _FLIPPED:
            return (_FLIPPED[type(node)].__name__.lower(), right, left)
        return (type(node).__name__.lower(), left, right)
    if isinstance(node, _COMMUTATIVE):
        pair = _sorted([_expr(node.this, scope, outputs=outputs), _expr(node.expression, scope, outputs=outputs)])
        return (type(node).__name__.lower(), *pair)
    parts: list[Hashable] = [type(node).__name__.lower()]
    for key, value in sorted(node.args.items(), key=lambda kv: kv[0]):
        if isinstance(value, list):
            if value:
                parts.append((key, tuple(_arg_form(v, scope, outputs) for v in value)))
        elif value is not None and value is not False:
            parts.append((key, _arg_form(value, scope, outputs)))
    return tuple(parts)


def _arg_form(value: Any, scope: _Scope, outputs: bool) -> Hashable:
    if isinstance(value, exp.Expression):
        return _expr(value, scope, outputs=outputs)
    if isinstance(value, str):
        return value.lower()
    return value if isinstance(value, int | float | bool) else repr(value)


def _is_value_column(node: exp.Expression, scope: _Scope) -> bool:
    node = _unparen(node)
    return isinstance(node, exp.Column) and _quoted_value(node, scope)


def _quoted_value(col: exp.Column, scope: _Scope) -> bool:
    if scope.known(col.name.lower()):
        return False
    return _is_value_identifier(col)


def _column(col: exp.Column, scope: _Scope, outputs: bool) -> Hashable:
    name = col.name.lower()
    if isinstance(col.this, exp.Star):
        name = "*"
    if _quoted_value(col, scope):
        return ("value",)
    if col.table:
        return ("col", scope.qualifier(col.table.lower()), name)
    if outputs and name in scope.outputs and not scope.known(name):
        return _expr(scope.outputs[name], scope)
    return ("col", scope.resolve(name), name)


def _conditions(node: exp.Expression | None, scope: _Scope, outputs: bool = False) -> Hashable:
    """A WHERE or HAVING clause: its conditions as a multiset and the set of its AND/OR connectors."""
    if node is None:
        return None
    conditions: list[Hashable] = []
    connectors: set[str] = set()

    def split(n: exp.Expression) -> None:
        n = _unparen(n)
        if isinstance(n, exp.And | exp.Or):
            connectors.add(type(n).__name__.lower())
            split(n.this)
            split(n.expression)
        else:
            conditions.append(_expr(n, scope, outputs=outputs))

    split(node)
    return (_sorted(conditions), tuple(sorted(connectors)))


def _order(node: exp.Expression | None, scope: _Scope) -> Hashable:
    if node is None:
        return None
    return tuple((_expr(o.this, scope, outputs=True), bool(o.args.get("desc"))) for o in node.expressions)


def _arg(node: exp.Expression, *names: str) -> Any:
    for name in names:
        if node.args.get(name) is not None:
            return node.args[name]
    return None


def _canon_query(node: exp.Expression, schema: Schema | None, keep_distinct: bool, parent: _Scope | None) -> Hashable:
    node = _unparen(node)
    if isinstance(node, exp.Subquery):
        return _canon_query(node.this, schema, keep_distinct, parent)
    scope = _Scope(schema, keep_distinct, parent)
    with_ = _arg(node, "with_", "with")
    if with_ is not None:
        for cte in with_.expressions:
            scope.ctes[cte.alias_or_name.lower()] = ("query", _canon_query(cte.this, schema, keep_distinct, scope))
    if isinstance(node, exp.SetOperation):
        left = _canon_query(node.this, schema, keep_distinct, scope)
        right = _canon_query(node.expression, schema, keep_distinct, scope)
        pair = (left, right) if isinstance(node, exp.Except) else _sorted([left, right])
        kind = type(node).__name__.lower() + ("" if node.args.get("distinct") else " all")
        return ("setop", kind, pair, _order(node.args.get("order"), scope), node.args.get("limit") is not None)
    if not isinstance(node, exp.Select):
        return ("other", node.sql(dialect="sqlite").lower())
    tables: list[Unit] = []
    sources = [_arg(node, "from_", "from")] + [j for j in node.args.get("joins") or []]
    for source in sources:
        if source is None:
            continue
        item = source.this
        alias = item.alias_or_name.lower()
        if isinstance(item, exp.Table) and item.name:
            unit: Unit = scope.cte(item.name.lower()) or item.name.lower()
        elif isinstance(item, exp.Subquery):
            inner = item.this
            unit = ("query", _canon_query(inner, schema, keep_distinct, parent))
            if isinstance(inner, exp.Query):
                scope.sub_columns[unit] = frozenset(s.alias_or_name.lower() for s in inner.selects)
        else:
            unit = ("source", _expr(item, scope))
        tables.append(unit)
        scope.units[alias] = unit
        if isinstance(item, exp.Table) and item.name:
            scope.units.setdefault(item.name.lower(), unit)
    for select in node.expressions:
        if isinstance(select, exp.Alias) and not (
            isinstance(select.this, exp.Column) and select.this.name.lower() == select.alias.lower()
        ):
            scope.outputs[select.alias.lower()] = select.this
    distinct = bool(node.args.get("distinct")) and keep_distinct
    where, having, group = node.args.get("where"), node.args.get("having"), node.args.get("group")
    return (
        "select",
        distinct,
        _sorted(_expr(e, scope) for e in node.expressions),
        _sorted(tables),
        _conditions(where.this if where is not None else None, scope),
        _sorted(_expr(e, scope, outputs=True) for e in group.expressions) if group is not None else None,
        _conditions(having.this if having is not None else None, scope, outputs=True),
        _order(node.args.get("order"), scope),
        node.args.get("limit") is not None,
    )


def canonical_form(sql: str, *, schema: Schema | None = None, keep_distinct: bool = True) -> Hashable | None:
    """The form exact-set match compares; None when ``sql`` is not one query sqlglot can parse."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except SqlglotError:
        return None
    tree = statements[0] if len(statements) == 1 else None
    if not isinstance(tree, exp.Expression) or not isinstance(_unparen(tree), exp.Query | exp.Subquery):
        return None
    lowered = {t.lower(): frozenset(c.lower() for c in cols) for t, cols in schema.items()} if schema else None
    try:
        return _canon_query(tree, lowered, keep_distinct, None)
    except RecursionError:
        return None


def exact_set_match(pred_sql: str, gold_sql: str, *, schema: Schema | None = None, keep_distinct: bool = True) -> bool:
    """Spider's exact-set match, values ignored: the queries' clauses compare as sets (see the module's
    docstring). ``schema`` (table -> columns) resolves unqualified columns in joins; ``keep_distinct``
    false ignores a SELECT-level DISTINCT. A prediction (or gold) that does not parse never matches."""
    pred = canonical_form(pred_sql, schema=schema, keep_distinct=keep_distinct)
    if pred is None:
        return False
    gold = canonical_form(gold_sql, schema=schema, keep_distinct=keep_distinct)
    return gold is not None and pred == gold


# --- evaluation ----------------------------------------------------------------------------------


def _score(items: Sequence[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    out = {}
    for level in LEVELS:
        chosen = [i for i in items if level == "all" or i["difficulty"] == level]
        correct = sum(bool(i[kind]) for i in chosen)
        out[level] = {"count": len(chosen), "correct": correct, "accuracy": correct / len(chosen) if chosen else 0.0}
    return out


def _print_scores(scores: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """The table Spider's evaluator prints: levels as columns, counts then accuracy per type."""
    any_type = next(iter(scores.values()))
    print(f"{'':20} " + " ".join(f"{level:20}" for level in LEVELS))
    print(f"{'count':20} " + " ".join(f"{any_type[level]['count']:<20d}" for level in LEVELS))
    titles = {"exec": ("EXECUTION ACCURACY", "execution"), "match": ("EXACT MATCHING ACCURACY", "exact match")}
    for kind, (title, row) in titles.items():
        if kind in scores:
            print(f"\n{'=' * 21} {title:^26} {'=' * 21}")
            print(f"{row:20} " + " ".join(f"{scores[kind][level]['accuracy']:<20.3f}" for level in LEVELS))


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    """A rich progress bar on stderr (a callable advancing it), or a no-op when not ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task("evaluating", total=total)
        yield lambda: bar.advance(task)


def _execute(
    path: Path,
    pred: str,
    gold: str,
    args: _Args,
    schema: Schema | None,
    gold_cache: dict[tuple[Path, str], list[tuple[Any, ...]] | str],
) -> tuple[bool, str | None]:
    if args.plug_value:
        pred = plug_values(pred, gold, schema)
    if not args.keep_distinct:
        pred, gold = remove_distinct(pred), remove_distinct(gold)
    key = (path, gold)
    if key not in gold_cache:
        try:
            gold_cache[key] = run_sqlite(path, gold, _TIMEOUT_S)
        except sqlite3.Error as exc:
            gold_cache[key] = f"the gold query failed: {_sqlite_message(exc)}"
    gold_rows = gold_cache[key]
    if isinstance(gold_rows, str):
        return False, gold_rows
    if not pred:
        return False, "empty prediction"
    try:
        check_read_only(pred, "sqlite")  # predictions are model output: guarded like any query
        pred_rows = run_sqlite(path, pred, _TIMEOUT_S)
    except DataPilotError as exc:
        return False, exc.message
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
        return False, _sqlite_message(exc)
    return results_match(pred_rows, gold_rows, gold_orders(gold)), None


def _sqlite_message(exc: Exception) -> str:
    if str(exc) == "interrupted":  # what run_sqlite's deadline raises
        return f"timed out after {_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}"


def start_evaluate(evaluate_args: dict[str, Any]) -> dict[str, Any]:
    """Score a predictions file against Spider-format gold (see the module's docstring), print the
    table Spider's evaluator prints and return the figures plus one entry per question in "items"."""
    args = _parse_args(evaluate_args)
    gold = _read_gold(args.gold)
    preds = _read_predictions(args.input, gold)
    schemas = load_schemas(args.table) if args.table is not None and "match" in args.types else {}
    paths: dict[str, Path] = {}
    if "exec" in args.types:
        assert args.db is not None  # _parse_args requires it
        for _, db_id in gold:
            if db_id not in paths:
                paths[db_id] = database_path(args.db, db_id)

    items: list[dict[str, Any]] = []
    gold_cache: dict[tuple[Path, str], list[tuple[Any, ...]] | str] = {}
    with _progress(args.progress, len(gold)) as advance:
        for index, ((gold_sql, db_id), pred) in enumerate(zip(gold, preds, strict=True)):
            item: dict[str, Any] = {"index": index, "db_id": db_id, "difficulty": difficulty_of(gold_sql),
                                    "exec": None, "match": None, "error": None}  # fmt: skip
            schema = schemas.get(db_id)
            if "exec" in args.types:
                item["exec"], item["error"] = _execute(paths[db_id], pred, gold_sql, args, schema, gold_cache)
            if "match" in args.types:
                pred_form = canonical_form(pred, schema=schema, keep_distinct=args.keep_distinct)
                gold_form = canonical_form(gold_sql, schema=schema, keep_distinct=args.keep_distinct)
                item["match"] = pred_form is not None and pred_form == gold_form
                if item["error"] is None and pred_form is None:
                    item["error"] = "empty prediction" if not pred else "the prediction does not parse as one query"
                elif item["error"] is None and gold_form is None:
                    item["error"] = "the gold query does not parse as one query"
            items.append(item)
            advance()

    result: dict[str, Any] = {kind: _score(items, kind) for kind in args.types}
    _print_scores(result)
    result["items"] = items
    return result

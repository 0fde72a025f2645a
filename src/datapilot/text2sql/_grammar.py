"""GBNF grammars (llama.cpp's format) for the SQL a model writes over the linked tables.

The grammar fixes the identifiers and the SELECT skeleton and leaves expressions permissive:
constraining a whole SQL grammar costs accuracy on strong models, constraining identifiers does not.

Every column must belong to a table the statement reads. A context-free grammar cannot look ahead
from the select list to the FROM clause, so a statement is a choice among *scopes*: one table (its
columns bare), or two or three tables joined along foreign keys (a table joined to itself too), each
under its one alias (``table_aliases``: ``order_items AS oi``), with columns qualified by the alias, or
bare where no other table of the scope has the name (no "ambiguous column"). llama.cpp follows every
scope that still fits the text so far, so a column of a table the query does not name is refused by
the time it names its tables. A subquery is a statement of its own; ``FROM (subquery)`` may only
aggregate what the subquery returns. String literals, numbers, the usual operators, CASE, CAST,
IN/BETWEEN/LIKE/IS NULL are free; function names come from a list per dialect. Names that need it
are quoted the dialect's way. Keywords are upper case.

Not expressible (the model must write it another way): correlated subqueries, references to a select
item's alias outside the select list, joins of more than ``max_join`` tables, window functions, CTEs.

Whitespace between tokens is one space (the prompts' examples are one line each: a small model that
starts breaking lines writes one token per line and rambles), and lists and expressions are bounded,
so a small model cannot loop on blanks or repeat itself for ever. A dialect the grammar does not know gets
``None``: the caller stays unconstrained.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from datapilot.datasource import TableInfo
from datapilot.models.structured import gbnf_literal as literal

# Words that cannot be bare identifiers (or aliases) in some dialect: names like these are quoted.
RESERVED = frozenset(
    """
    ABORT ALL ALTER ANALYZE AND ANY AS ASC BETWEEN BOTH BY CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE
    CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP DEFAULT DELETE DESC DISTINCT DO DROP ELSE END ESCAPE
    EXCEPT EXISTS FALSE FETCH FOR FOREIGN FROM FULL GLOB GRANT GROUP HAVING IF IN INDEX INNER INSERT INTERSECT
    INTO IS ISNULL JOIN KEY LEADING LEFT LIKE LIMIT MATCH NATURAL NO NOT NOTNULL NULL OF OFFSET ON OR ORDER
    OUTER OVER PRIMARY REFERENCES REGEXP RIGHT ROW ROWS SELECT SET TABLE THEN TO TRAILING TRUE UNION UNIQUE
    UPDATE USING VALUES WHEN WHERE WINDOW WITH
    """.split()
)

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_COMMON_FUNCTIONS = ("ABS", "ROUND", "LOWER", "UPPER", "LENGTH", "COALESCE", "NULLIF", "TRIM", "REPLACE")
_AGGREGATES = ("SUM", "AVG", "MIN", "MAX")
SYMBOLS = ("=", "!=", "<>", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "||")  # binary operators
_EXTRACT_FIELDS = ("YEAR", "QUARTER", "MONTH", "WEEK", "DAY", "HOUR", "MINUTE", "SECOND")

MAX_ITEMS = 6  # select items: a small model repeating columns stops here (Spider gold: at most 5)
# llama.cpp follows every scope that fits the text so far: each costs time at every token.
MAX_SCOPES = 48
MAX_OPERATORS = 8  # operators in one expression outside parentheses ("a = 1 AND b = 2" is 3): a chain ends


@dataclass(frozen=True, slots=True)
class _Dialect:
    quote: str  # the identifier quote
    lower_folds: bool  # unquoted names fold to lower case (PostgreSQL): only lower-case names go unquoted
    functions: tuple[str, ...]
    aggregates: tuple[str, ...]
    types: tuple[str, ...]
    extract: bool  # EXTRACT(field FROM expr)
    ilike: bool
    backslash_escapes: bool  # strings may hold \' (MySQL)


_DIALECTS = {
    "sqlite": _Dialect(
        quote='"',
        lower_folds=False,
        functions=(*_COMMON_FUNCTIONS, "SUBSTR", "INSTR", "IFNULL", "IIF", "strftime", "date", "datetime",
                   "julianday"),  # the date functions in the case SQLite's documentation writes them
        aggregates=(*_AGGREGATES, "TOTAL", "GROUP_CONCAT"),
        types=("INTEGER", "REAL", "TEXT", "NUMERIC"),
        extract=False,
        ilike=False,
        backslash_escapes=False,
    ),
    "duckdb": _Dialect(
        quote='"',
        lower_folds=False,
        functions=(*_COMMON_FUNCTIONS, "SUBSTR", "SUBSTRING", "CONCAT", "IFNULL", "YEAR", "MONTH", "DAY",
                   "DATE_TRUNC", "DATE_PART", "STRFTIME"),
        aggregates=(*_AGGREGATES, "MEDIAN", "STRING_AGG"),
        types=("INTEGER", "BIGINT", "DOUBLE", "DECIMAL", "VARCHAR", "DATE", "TIMESTAMP"),
        extract=True,
        ilike=True,
        backslash_escapes=False,
    ),
    "postgres": _Dialect(
        quote='"',
        lower_folds=True,
        functions=(*_COMMON_FUNCTIONS, "SUBSTRING", "CONCAT", "DATE_TRUNC", "DATE_PART", "TO_CHAR", "NOW"),
        aggregates=(*_AGGREGATES, "STRING_AGG"),
        types=("INTEGER", "BIGINT", "NUMERIC", "REAL", "FLOAT", "TEXT", "VARCHAR", "DATE", "TIMESTAMP"),
        extract=True,
        ilike=True,
        backslash_escapes=False,
    ),
    "mysql": _Dialect(
        quote="`",
        lower_folds=False,
        functions=(*_COMMON_FUNCTIONS, "SUBSTRING", "CONCAT", "IFNULL", "YEAR", "MONTH", "DAY", "DATE_FORMAT",
                   "DATEDIFF", "NOW", "CURDATE"),
        aggregates=(*_AGGREGATES, "GROUP_CONCAT"),
        types=("SIGNED", "UNSIGNED", "DECIMAL", "CHAR", "DATE", "DATETIME"),
        extract=True,
        ilike=False,
        backslash_escapes=True,
    ),
}  # fmt: skip
_DIALECTS["postgresql"] = _DIALECTS["postgres"]
_DIALECTS["mariadb"] = _DIALECTS["mysql"]


def grammar_dialects() -> list[str]:
    """The dialects ``sql_grammar`` can write a grammar for."""
    return sorted(_DIALECTS)


def _alt(options: Iterable[str]) -> str:
    opts = list(dict.fromkeys(options))
    if not opts:
        raise ValueError("an empty choice")
    return opts[0] if len(opts) == 1 else "(" + " | ".join(opts) + ")"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:24] or "t"


def _alias_candidates(name: str) -> Iterator[str]:
    words = [w for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if w]
    initials = "".join(w[0] for w in words).lower()
    if not initials or not initials[0].isalpha():
        initials = "t" + initials
    yield initials
    base = re.sub(r"[^a-z0-9]", "", name.lower())
    for n in range(2, min(len(base), 6) + 1):
        yield base[:n]
    for i in itertools.count(1):
        yield f"{initials}{i}"


def table_aliases(tables: list[TableInfo]) -> dict[str, str]:
    """The one alias each table may take in a query: its initials (``order_items`` -> ``oi``), made
    unique over ``tables``. Prompts use the same aliases in their examples."""
    names = {t.name.lower() for t in tables}
    out: dict[str, str] = {}
    used: set[str] = set()
    for t in tables:
        for candidate in _alias_candidates(t.name):
            if (
                _PLAIN.match(candidate)
                and candidate.upper() not in RESERVED
                and candidate not in used
                and candidate not in names
                and not any(candidate in (f"{a}1", f"{a}2") for a in used)
            ):
                out[t.name] = candidate
                used.add(candidate)
                break
    return out


def _trie(entries: Iterable[tuple[str, str]]) -> str:
    """Words, each followed by its continuation, with common prefixes factored out.

    llama.cpp keeps one parse stack per alternative still open: forty column names listed side by side
    are forty stacks at every place a column may start, a trie of them a handful."""
    root: dict[str | None, Any] = {}
    for word, continuation in entries:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node.setdefault(None, []).append(continuation)
    return _emit(root)


def _emit(node: dict[str | None, Any]) -> str:
    continuations = list(dict.fromkeys(node.get(None, [])))
    options = [c for c in continuations if c]
    for ch, child in node.items():
        if ch is None:
            continue
        text = ch
        while None not in child and len(child) == 1:
            ((nxt, child),) = child.items()
            text += nxt
        rest = _emit(child)
        options.append(f"{literal(text)} {rest}".strip())
    if not options:
        return ""
    body = options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"
    if "" in continuations:
        return body + "?" if len(options) > 1 else f"({body})?"
    return body


@dataclass(frozen=True, slots=True)
class _Ref:
    """One table as a query reads it: the table and the alias it is declared with."""

    table: TableInfo
    alias: str


@dataclass(slots=True)
class _Scope:
    """The tables one statement reads: a single table (its columns bare) or tables joined along
    foreign keys, each under its alias (columns qualified by the alias, or bare when no other
    table in the scope has the name)."""

    key: str
    refs: list[_Ref]
    orders: list[tuple[int, ...]]  # the orders the FROM clause may list the refs in

    @property
    def joined(self) -> bool:
        return len(self.refs) > 1


class _Builder:
    def __init__(self, tables: list[TableInfo], dialect: _Dialect, max_join: int, in_json: bool = False) -> None:
        # ``in_json``: the SQL is written inside a JSON string, so its quotes and newlines are escaped.
        self.tables, self.d, self.max_join, self.in_json = tables, dialect, max_join, in_json
        self.rules: dict[str, str] = {}
        self.index = {t.name: i for i, t in enumerate(tables)}
        self.aliases = table_aliases(tables)
        self.scopes = self._scopes()

    # --- GBNF pieces ----------------------------------------------------------------------------------

    def rule(self, name: str, body: str) -> str:
        self.rules.setdefault(name, body)
        return name

    def kw(self, word: str) -> str:
        """A keyword, in upper case; a phrase's words are joined by ``sp``."""
        return " sp ".join(literal(w.upper()) for w in word.split())

    def spellings(self, name: str) -> list[str]:
        """A table or column name as the dialect accepts it: bare where it may be, and quoted."""
        q = self.d.quote
        quoted = q + name.replace(q, q + q) + q
        plain = bool(_PLAIN.match(name)) and name.upper() not in RESERVED
        if self.d.lower_folds:
            plain = plain and name == name.lower()  # an unquoted name is folded to lower case
        if self.in_json:
            quoted = quoted.replace("\\", "\\\\").replace('"', '\\"')
        return [name, quoted] if plain else [quoted]

    def table_name(self, t: TableInfo) -> str:
        return self.rule(f"tn{self.index[t.name]}-{_slug(t.name)}", _trie((s, "") for s in self.spellings(t.name)))

    def columns(self, t: TableInfo) -> str:
        words = [(s, "") for c in t.columns for s in self.spellings(c.name)]
        return self.rule(f"cols{self.index[t.name]}-{_slug(t.name)}", _trie(words))

    # --- scopes ---------------------------------------------------------------------------------------

    def _edges(self) -> tuple[set[frozenset[str]], list[str]]:
        edges: set[frozenset[str]] = set()
        self_joins: list[str] = []
        for t in self.tables:
            for fk in t.foreign_keys:
                if fk.ref_table == t.name:
                    if t.name not in self_joins:
                        self_joins.append(t.name)
                elif fk.ref_table in self.index:
                    edges.add(frozenset((t.name, fk.ref_table)))
        return edges, self_joins

    def _connected(self, edges: set[frozenset[str]], size: int) -> list[tuple[str, ...]]:
        """Sets of ``size`` tables connected by foreign keys, in schema order."""
        out = []
        for names in itertools.combinations([t.name for t in self.tables], size):
            reached = {names[0]}
            grew = True
            while grew:
                grew = False
                for n in names:
                    if n not in reached and any(frozenset((n, r)) in edges for r in reached):
                        reached.add(n)
                        grew = True
            if len(reached) == size:
                out.append(names)
        return out

    @staticmethod
    def _join_orders(names: tuple[str, ...], edges: set[frozenset[str]]) -> list[tuple[int, ...]]:
        """Orders in which each table joins one listed before it."""
        orders = []
        for order in itertools.permutations(range(len(names))):
            if all(any(frozenset((names[i], names[j])) in edges for j in order[:k]) for k, i in enumerate(order) if k):
                orders.append(order)
        return orders

    def _scopes(self) -> list[_Scope]:
        by_name = {t.name: t for t in self.tables}
        alias = self.aliases
        edges, self_joins = self._edges()
        scopes = [_Scope(_slug(t.name), [_Ref(t, alias[t.name])], [(0,)]) for t in self.tables]
        for name in self_joins:
            t = by_name[name]
            refs = [_Ref(t, f"{alias[name]}1"), _Ref(t, f"{alias[name]}2")]
            scopes.append(_Scope(_slug(name) + "-self", refs, [(0, 1)]))
        for size in range(2, self.max_join + 1):
            connected = self._connected(edges, size)
            if size > 2 and len(scopes) + len(connected) > MAX_SCOPES:
                break  # a dense schema: fewer tables per join rather than a grammar too slow to follow
            for names in connected:
                refs = [_Ref(by_name[n], alias[n]) for n in names]
                scopes.append(_Scope("-".join(_slug(n) for n in names), refs, self._join_orders(names, edges)))
        for i, scope in enumerate(scopes):  # rule names stay unique whatever the tables are called
            scope.key = f"s{i}-{scope.key}"
        return scopes

    # --- rules ----------------------------------------------------------------------------------------

    def common(self) -> None:
        kw = self.kw
        self.rule("sp", '" "')
        self.rule("osp", '" "?')
        self.rule("int", "[0-9] [0-9]{0,11}")
        self.rule("num", 'int ("." [0-9]{1,8})?')
        if self.in_json:  # no quote, backslash or control character: nothing to escape
            char = "[^'\"\\\\\\x00-\\x1f] | \"''\""
        elif self.d.backslash_escapes:
            char = '[^\'\\\\\\n] | "\'\'" | "\\\\" [^\\n]'
        else:
            char = "[^'\\n] | \"''\""
        self.rule("str", f'"\'" ({char}){{0,100}} "\'"')
        self.rule("calias", "[a-zA-Z_] [a-zA-Z0-9_]{0,30}")
        self.rule("symop", _alt(literal(s) for s in SYMBOLS))
        self.rule("setop", _alt([kw("UNION ALL"), kw("UNION"), kw("INTERSECT"), kw("EXCEPT")]))
        self.rule("join", f"({_alt([kw('INNER'), kw('LEFT OUTER'), kw('LEFT')])} sp)? {kw('JOIN')}")
        self.rule("type", _alt(kw(t) for t in self.d.types))
        if self.d.extract:
            self.rule("field", _alt(kw(f) for f in _EXTRACT_FIELDS))
        self.rule("limit", f"{kw('LIMIT')} sp int (sp {kw('OFFSET')} sp int)?")
        self.rule("select", f"{kw('SELECT')} sp body")
        self.rule("body", " | ".join([*(f"{s.key}-q" for s in self.scopes), "der-q"]))
        # A subquery in FROM reads tables, not another subquery: ``FROM (SELECT .. FROM (SELECT ..`` is
        # where a small model loops until max_tokens.
        self.rule("tselect", f"{kw('SELECT')} sp tbody")
        self.rule("tbody", " | ".join(f"{s.key}-q" for s in self.scopes))

    def _words(self, p: str, columns: list[tuple[str, str]]) -> str:
        """Everything an operand may start with by name, as one trie: ``columns``, functions, NULL,
        CASE, EXISTS, NOT."""
        d, kw = self.d, self.kw
        args = f'{p}-expr (osp "," osp {p}-expr)*'
        distinct = f"({kw('DISTINCT')} sp)?"
        calls: list[tuple[str, str]] = [
            ("COUNT", f'osp "(" osp ("*" | {distinct} {p}-expr) osp ")"'),
            ("CAST", f'osp "(" osp {p}-expr sp {kw("AS")} sp type osp ")"'),
            ("CASE", f"sp {p}-case"),
            ("EXISTS", 'osp "(" osp select osp ")"'),
            ("NOT", f"sp {p}-un"),
            ("NULL", ""),
        ]
        calls += [(f, f'osp "(" osp {distinct} {p}-expr osp ")"') for f in d.aggregates]
        calls += [(f, f'osp "(" osp ({args})? osp ")"') for f in d.functions]
        if d.extract:
            calls.append(("EXTRACT", f'osp "(" osp field sp {kw("FROM")} sp {p}-expr osp ")"'))
        return _trie([*columns, *calls])

    def _column_words(self, scope: _Scope) -> list[tuple[str, str]]:
        """A scope's column references: bare when no other table in the scope has the name, and
        qualified by the table's alias in a join."""
        counts: dict[str, int] = {}
        for r in scope.refs:
            for c in r.table.columns:
                counts[c.name] = counts.get(c.name, 0) + 1
        unique = [c.name for r in scope.refs for c in r.table.columns if counts[c.name] == 1]
        words = [(s, "") for name in unique for s in self.spellings(name)]
        if scope.joined:
            words += [(r.alias, f'"." {self.columns(r.table)}') for r in scope.refs]
        return words

    def _from(self, scope: _Scope, p: str) -> str:
        name = self.table_name
        if not scope.joined:
            r = scope.refs[0]
            return self.rule(f"{p}-from", f"{name(r.table)} (sp ({self.kw('AS')} sp)? {literal(r.alias)})?")
        refs = [f"{name(r.table)} sp ({self.kw('AS')} sp)? {literal(r.alias)}" for r in scope.refs]
        on = f"sp {self.kw('ON')} sp {p}-expr"
        options = [" ".join([refs[o[0]], *(f"sp join sp {refs[i]} {on}" for i in o[1:])]) for o in scope.orders]
        if len(refs) == 2:
            options += [f'{refs[0]} osp "," osp {refs[1]}', f'{refs[1]} osp "," osp {refs[0]}']
        return self.rule(f"{p}-from", _alt(options))

    def expressions(self, p: str, columns: list[tuple[str, str]]) -> None:
        """One scope's expression rules, named ``{p}-...``."""
        kw = self.kw
        # Bounded, so that a small model repeating "AND x = 'a'" ends; nested parentheses start afresh.
        self.rule(f"{p}-expr", f"{p}-un ({p}-op){{0,{MAX_OPERATORS}}}")
        un = f"{p}-un"
        between = f"sp {un} sp {kw('AND')} sp {un}"
        word_ops = [
            ("AND", f"sp {un}"),
            ("OR", f"sp {un}"),
            ("LIKE", f"sp {un}"),
            ("IS", f"sp ({kw('NOT')} sp)? {kw('NULL')}"),
            ("IN", f"osp {p}-list"),
            ("BETWEEN", between),
            ("NOT", f"sp ({kw('LIKE')} sp {un} | {kw('IN')} osp {p}-list | {kw('BETWEEN')} {between})"),
        ]
        if self.d.ilike:
            word_ops.append(("ILIKE", f"sp {un}"))
        self.rule(f"{p}-op", f"osp symop osp {un} | sp {_trie(word_ops)}")
        self.rule(f"{p}-list", f'"(" osp (select | {p}-expr (osp "," osp {p}-expr)*) osp ")"')
        self.rule(f"{p}-un", f'"-"? {p}-prim')
        self.rule(f"{p}-prim", f'{self._words(p, columns)} | num | str | "(" osp ({p}-expr | select) osp ")"')
        self.rule(
            f"{p}-case",
            f"({p}-expr sp)? ({kw('WHEN')} sp {p}-expr sp {kw('THEN')} sp {p}-expr sp)+ "
            f"({kw('ELSE')} sp {p}-expr sp)? {kw('END')}",
        )
        self.rule(f"{p}-item", f'"*" | {p}-expr (sp {kw("AS")} sp calias)?')
        self.rule(f"{p}-ord", f"{p}-expr (sp {_alt([kw('ASC'), kw('DESC')])})?")
        order_by = f'(sp {kw("ORDER BY")} sp {p}-ord (osp "," osp {p}-ord){{0,3}})?'
        self.rule(f"{p}-tail", f"{order_by} (sp limit)? | sp setop sp select")
        self.rule(
            f"{p}-q",
            f'({kw("DISTINCT")} sp)? {p}-item (osp "," osp {p}-item){{0,{MAX_ITEMS - 1}}} sp {kw("FROM")} sp {p}-from '
            f"(sp {kw('WHERE')} sp {p}-expr)? "
            f'(sp {kw("GROUP BY")} sp {p}-expr (osp "," osp {p}-expr){{0,3}} (sp {kw("HAVING")} sp {p}-expr)?)? '
            f"{p}-tail",
        )

    def derived(self) -> None:
        """``FROM (subquery) [AS x]``: the outer query reads the subquery's columns under whatever names
        the subquery gave them, so it may only aggregate them (``SELECT AVG(n) FROM (SELECT COUNT(*)
        AS n ...)``): a bare unknown word in its select list would keep this scope open to any word."""
        kw = self.kw
        self.rules["der-item"] = '"COUNT" osp "(" osp "*" osp ")" | der-agg'
        aggregates = [(f, f'osp "(" osp ({kw("DISTINCT")} sp)? calias osp ")"') for f in self.d.aggregates]
        self.rule("der-agg", _trie(aggregates))
        self.expressions("der", [])
        self.rules["der-prim"] = self.rules["der-prim"] + " | calias"
        self.rule("der-from", f'"(" osp tselect osp ")" (sp ({kw("AS")} sp)? calias)?')

    def statement(self) -> None:
        self.common()
        for scope in self.scopes:
            self.expressions(scope.key, self._column_words(scope))
            self._from(scope, scope.key)
        self.derived()

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def build(self, prefix: str, open_end: bool) -> str:
        start = prefix.strip().upper()
        if start not in ("", "SELECT"):
            raise ValueError(f"the grammar cannot continue the prefix {prefix!r}: only '' or 'SELECT'")
        self.statement()
        head = "select" if not start else "body" if prefix[-1].isspace() else "sp body"
        # The statement may simply end (llama.cpp then allows the end of generation), or end with ';'
        # or a blank line. With ``open_end`` anything may follow those: the caller's stop strings end
        # generation there, and a token such as ";\n" must not be refused for running past the end.
        end = '(";" | "\\n\\n") [^\\x00]*' if open_end else '";" | "\\n\\n"'
        return self.text(f"{head} ({end})?")

    def build_answer(self, charts: Sequence[str]) -> str:
        """The chat prompt's JSON answer, ``{"thoughts": ..., "sql": ..., "chart": ...}`` in that order,
        its ``sql`` the statement."""
        self.statement()
        self.rule("ws", '("\\n" " "{0,4} | " ")?')
        self.rule("jstr", '"\\"" ([^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]){0,400} "\\""')
        self.rule("chart", _alt(literal(f'"{c}"') for c in charts))

        def key(name: str) -> str:
            return "ws " + literal('"' + name + '"') + ' ws ":" ws'

        quote = literal('"')
        sql = f'{quote} select ";"? {quote}'
        return self.text(f'"{{" {key("thoughts")} jstr ws "," {key("sql")} {sql} ws "," {key("chart")} chart ws "}}"')


def sql_grammar(
    tables: list[TableInfo], dialect: str, *, prefix: str = "", max_join: int = 3, open_end: bool = False
) -> str | None:
    """A GBNF grammar for one SELECT statement over ``tables`` in ``dialect``; ``None`` for a dialect
    the grammar does not know, or no tables.

    ``prefix`` is what the prompt already wrote of the statement, ``""`` or ``"SELECT"`` (with or
    without its trailing space): the grammar starts right after it. ``max_join``: the most tables one
    statement may join (each set of tables connected by foreign keys is a scope of the grammar).
    ``open_end``: any text may follow the statement's end (``;`` or a blank line), for a caller whose
    stop strings end generation there."""
    spec = _DIALECTS.get(dialect.lower())
    if spec is None or not tables or any(not t.columns for t in tables):
        return None
    return _Builder(tables, spec, max_join).build(prefix, open_end)


def answer_grammar(tables: list[TableInfo], dialect: str, charts: Sequence[str], *, max_join: int = 3) -> str | None:
    """A GBNF grammar for the chat prompt's JSON answer, ``{"thoughts": "...", "sql": "...", "chart":
    "..."}``, whose ``sql`` is one SELECT over ``tables`` (as ``sql_grammar``, escaped for JSON) and
    whose ``chart`` is one of ``charts``; ``None`` where ``sql_grammar`` gives none."""
    spec = _DIALECTS.get(dialect.lower())
    if spec is None or not tables or any(not t.columns for t in tables) or not charts:
        return None
    return _Builder(tables, spec, max_join, in_json=True).build_answer(charts)

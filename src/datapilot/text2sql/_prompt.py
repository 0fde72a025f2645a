"""Prompts for text-to-SQL: the linked schema, the dialect, a few examples, the question.

Two styles. ``completion`` (the default) is a SQL file the model continues: schema, worked examples
as ``-- Question:`` comments followed by their query, then the question and an open ``SELECT``. Small
base models (the embedded Gemma 270M) can only do this. ``chat`` asks an instruction-following model
for a JSON answer with its thoughts, the SQL and a chart type.
"""

from __future__ import annotations

from dataclasses import dataclass

from datapilot.core.types import Message
from datapilot.datasource import TableInfo
from datapilot.text2sql._grammar import table_aliases

DIALECT_NAMES = {
    "sqlite": "SQLite",
    "duckdb": "DuckDB",
    "postgres": "PostgreSQL",
    "mysql": "MySQL/MariaDB",
}
CHART_TYPES = ("auto", "table", "bar", "line", "pie", "scatter")
COMPLETION_STOPS = [";", "\n\n", "-- Question", "\nQuestion"]


@dataclass(slots=True, frozen=True)
class Example:
    question: str
    sql: str


def _is_text(type_name: str) -> bool:
    t = type_name.upper()
    return any(k in t for k in ("CHAR", "TEXT", "STRING", "CLOB"))


def _is_number(type_name: str) -> bool:
    t = type_name.upper()
    return any(k in t for k in ("INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL"))


def schema_examples(tables: list[TableInfo], limit: int = 4) -> list[Example]:
    """Worked examples written from the schema itself, so they fit any database: a count, a grouped
    count over a text column, an average of a numeric column, and a join along a foreign key."""
    out: list[Example] = []
    by_size = sorted(tables, key=lambda t: -(t.row_count or 0))
    if by_size:
        t = by_size[-1]
        out.append(Example(f"How many {t.name} are there?", f"SELECT COUNT(*) FROM {t.name}"))
    for t in by_size:
        text_cols = [c for c in t.columns if _is_text(c.type) and not c.primary_key and c.samples]
        low_cardinality = [c for c in text_cols if "date" not in c.name.lower()]
        if low_cardinality:
            c = low_cardinality[-1]
            out.append(
                Example(
                    f"How many {t.name} are there for each {c.name}?",
                    f"SELECT {c.name}, COUNT(*) FROM {t.name} GROUP BY {c.name}",
                )
            )
            break
    for t in tables:
        nums = [c for c in t.columns if _is_number(c.type) and not c.primary_key and not c.name.endswith("_id")]
        if nums:
            c = nums[0]
            out.append(Example(f"What is the average {c.name} of {t.name}?", f"SELECT AVG({c.name}) FROM {t.name}"))
            break
    by_name = {t.name: t for t in tables}
    # The aliases the SQL grammar allows in joins: examples that use them teach the model to.
    aliases = table_aliases(tables)
    for t in tables:  # a join along a foreign key, filtered on a sample value
        for fk in t.foreign_keys:
            ref = by_name.get(fk.ref_table)
            if ref is None or ref is t or len(fk.columns) != 1:
                continue
            shown = next((c for c in ref.columns if _is_text(c.type) and c.samples), None)
            own = next((c for c in t.columns if not c.primary_key and c.name not in fk.columns), None)
            if shown is None or own is None:
                continue
            value = str(shown.samples[0]).replace("'", "''")
            a, b = aliases[t.name], aliases[ref.name]
            out.append(
                Example(
                    f"List the {own.name} of {t.name} whose {ref.name} {shown.name} is {value}.",
                    f"SELECT {a}.{own.name} FROM {t.name} AS {a} JOIN {ref.name} AS {b} ON {a}.{fk.columns[0]} = "
                    f"{b}.{fk.ref_columns[0]} WHERE {b}.{shown.name} = '{value}'",
                )
            )
            return out[:limit]
    return out[:limit]


def render_schema(tables: list[TableInfo], samples: bool = True) -> str:
    return "\n\n".join(t.ddl(samples=samples) for t in tables)


def completion_prompt(
    question: str,
    tables: list[TableInfo],
    dialect: str,
    examples: list[Example] | None = None,
    hints: list[str] | None = None,
    samples: bool = True,
) -> str:
    """A SQL file for the model to continue; it ends with ``SELECT`` (the answer's first word).
    ``hints``: conditions on real values the question names (``customers.city = 'Shanghai'``).
    ``samples``: show sample values in the schema (a model trained on the database knows them)."""
    examples = schema_examples(tables) if examples is None else examples
    lines = [
        f"-- {DIALECT_NAMES.get(dialect, dialect)} database. Each question is answered by one read-only SQL query.",
        "",
        render_schema(tables, samples),
        "",
    ]
    for ex in examples:
        lines += [f"-- Question: {ex.question}", ex.sql.rstrip(";") + ";", ""]
    if hints:
        lines.append("-- Values in the next question: " + "; ".join(hints))
    lines += [f"-- Question: {question.strip()}", "SELECT"]
    return "\n".join(lines)


def completion_correction(prompt: str, generated: str, error: str) -> str:
    """The prompt extended with the failed query and the database's error, asking for a fix."""
    return (
        f"{prompt.rsplit(chr(10), 1)[0]}\n{generated.rstrip(';')};\n-- That query failed: {error}\n"
        f"-- Corrected query:\nSELECT"
    )


CHAT_SYSTEM = (
    "You are a data analyst who writes {dialect} SQL. Answer with one JSON object and nothing else: "
    '{{"thoughts": "<one sentence>", "sql": "<one read-only SELECT query>", "chart": "<{charts}>"}}. '
    "Use only the tables and columns in the schema. Never write data or change the schema."
)


def chat_messages(
    question: str,
    tables: list[TableInfo],
    dialect: str,
    examples: list[Example] | None = None,
    hints: list[str] | None = None,
    samples: bool = True,
) -> list[Message]:
    examples = schema_examples(tables) if examples is None else examples
    system = CHAT_SYSTEM.format(dialect=DIALECT_NAMES.get(dialect, dialect), charts="|".join(CHART_TYPES))
    shots = "\n".join(f"Q: {e.question}\nSQL: {e.sql}" for e in examples)
    values = f"\n\nValues the question names: {'; '.join(hints)}" if hints else ""
    shown = f"\n\nExamples:\n{shots}" if shots else ""
    user = f"Schema:\n{render_schema(tables, samples)}{shown}{values}\n\nQuestion: {question.strip()}"
    return [Message("system", system), Message("user", user)]


def chat_correction(messages: list[Message], answer: str, error: str) -> list[Message]:
    return [
        *messages,
        Message("assistant", answer),
        Message("user", f"That query failed with this error: {error}\nReply with the corrected JSON object."),
    ]

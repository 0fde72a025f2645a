"""Text-to-SQL: from a question in plain language (English or Chinese) to a read-only query's result.

* ``Text2SQL``: schema linking (``SchemaLinker``, embedding similarity on large schemas), a prompt
  with the dialect and examples, the model through any ``LLMClient``, tolerant SQL extraction,
  sqlglot transpilation, the read-only guard, execution, and a bounded correction loop.
* ``sql_grammar`` / ``answer_grammar``: GBNF grammars for the SQL over the linked tables (only their
  names and columns, one SELECT), alone or in the chat prompt's JSON answer, sent to models that
  enforce grammars; ``table_aliases`` are the aliases they allow in joins.
* ``extract_sql`` / ``parse_answer`` / ``repair_json``: SQL and structured answers out of fences,
  JSON (repaired when malformed) or prose.
* ``evaluate`` and friends: execution accuracy on Spider-format questions; ``dev_set_path`` is the
  project's dev set over the sample database.
"""

from pathlib import Path

from datapilot.text2sql._eval import (
    EvalReport,
    Prediction,
    Predictor,
    Question,
    database_path,
    difficulty_of,
    evaluate,
    gold_orders,
    load_questions,
    results_match,
)
from datapilot.text2sql._extract import ParsedAnswer, extract_sql, parse_answer, parse_answer_list, repair_json
from datapilot.text2sql._grammar import answer_grammar, grammar_dialects, sql_grammar, table_aliases
from datapilot.text2sql._linking import SchemaLinker
from datapilot.text2sql._pipeline import Attempt, SQLAnswer, Text2SQL, Text2SQLOptions
from datapilot.text2sql._prompt import Example, chat_messages, completion_prompt, schema_examples
from datapilot.text2sql._transpile import transpile


def dev_set_path() -> Path:
    """The shipped dev set: Spider-format questions (English and Chinese) over the sample database."""
    return Path(__file__).parent / "data" / "dev.json"


__all__ = [
    "Attempt",
    "EvalReport",
    "Example",
    "ParsedAnswer",
    "Prediction",
    "Predictor",
    "Question",
    "SQLAnswer",
    "SchemaLinker",
    "Text2SQL",
    "Text2SQLOptions",
    "answer_grammar",
    "chat_messages",
    "completion_prompt",
    "database_path",
    "dev_set_path",
    "difficulty_of",
    "evaluate",
    "extract_sql",
    "gold_orders",
    "grammar_dialects",
    "load_questions",
    "parse_answer",
    "parse_answer_list",
    "repair_json",
    "results_match",
    "schema_examples",
    "sql_grammar",
    "table_aliases",
    "transpile",
]

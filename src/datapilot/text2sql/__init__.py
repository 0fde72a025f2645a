"""Text-to-SQL: from a question in plain language (English or Chinese) to a read-only query's result.

* ``Text2SQL``: schema linking (``SchemaLinker``, embedding similarity on large schemas), a prompt
  with the dialect and examples, the model through any ``LLMClient``, tolerant SQL extraction,
  sqlglot transpilation, the read-only guard, execution, and a bounded correction loop. Worked
  examples are picked for each question from a pool written over the schema; ``candidates`` > 1
  writes several answers and lets execution decide (the answer's ``confidence`` is their agreement).
* ``Grounding``: one source's value index and verified examples, for the pipeline: value hints in the
  prompt, the nearest verified examples shown, and a repeated question answered with its verified
  SQL (``Reuse``; a value swapped only when the index confirms it) without a model call.
* ``sql_grammar`` / ``answer_grammar``: GBNF grammars for the SQL over the linked tables (only their
  names and columns, one SELECT), alone or in the chat prompt's JSON answer, sent to models that
  enforce grammars; ``table_aliases`` are the aliases they allow in joins.
* ``extract_sql`` / ``parse_answer`` / ``repair_json``: SQL and structured answers out of fences,
  JSON (repaired when malformed) or prose.
* ``ExampleStore``: verified question -> SQL pairs per data source (added, rated up or down, imported
  from JSON / Spider / CSV files), checked read-only and runnable before they are kept; ``similar``
  finds the nearest for a new question with tables, columns and values masked (``mask_question``).
  ``StoredExample.to_prompt`` gives the prompt's ``Example``.
* ``ValueIndex`` / ``ValueHit`` / ``ValueIndexes``: value retrieval. Each data source's distinct text
  values, indexed by character n-grams, so "Shanghai", "shanghai" or "上海" in a question come back as
  hits and prompt hints (``customers.city = 'Shanghai'``); ``ValueIndexes`` builds one per source in
  the background (``ValueIndexOptions`` bounds what is read).
* ``evaluate`` and friends: execution accuracy on Spider-format questions; ``dev_set_path`` is the
  project's dev set over the sample database, the one the pipeline is tuned on; ``heldout_set_path``
  is the held-out set nobody tunes on, over a clinic database of another business that
  ``build_heldout_database`` / ``ensure_heldout_database`` generate.
  ``unseen_set_path`` is the unseen set, hand-written over a university database
  (``ensure_unseen_database``, ``UNSEEN_DB_ID``), never tuned on: it measures fine-tuning on a schema
  the project has never seen.
"""

from pathlib import Path

from datapilot.text2sql._eval import (
    DIFFICULTIES,
    GOLD_TIMEOUT_S,
    EvalReport,
    Prediction,
    Predictor,
    Question,
    ablation_rows,
    database_path,
    difficulty_of,
    evaluate,
    gold_orders,
    load_questions,
    results_match,
    run_sqlite,
    write_chart,
)
from datapilot.text2sql._eval_ray import RayEvalRunner, ray_batches, ray_workers
from datapilot.text2sql._examples import ExampleStore, StoredExample, mask_question, read_examples
from datapilot.text2sql._extract import ParsedAnswer, extract_sql, parse_answer, parse_answer_list, repair_json
from datapilot.text2sql._grammar import RESERVED, answer_grammar, grammar_dialects, sql_grammar, table_aliases
from datapilot.text2sql._grounding import Grounding, Reuse
from datapilot.text2sql._heldout import HELDOUT_DB_ID, build_heldout_database, ensure_heldout_database
from datapilot.text2sql._linking import SchemaLinker
from datapilot.text2sql._operators import (
    GenerateOperator,
    GroundOperator,
    LinkOperator,
    PromptOperator,
    Text2SQLEnv,
    VoteOperator,
    step_event,
)
from datapilot.text2sql._pipeline import Attempt, SQLAnswer, SQLTask, Text2SQL, Text2SQLOptions
from datapilot.text2sql._prompt import Example, chat_messages, completion_prompt, schema_examples
from datapilot.text2sql._runner import PipelineRunner
from datapilot.text2sql._transpile import transpile
from datapilot.text2sql._unseen import UNSEEN_DB_ID, ensure_unseen_database, unseen_set_path
from datapilot.text2sql._values import ValueHit, ValueIndex, ValueIndexes, ValueIndexOptions


def dev_set_path() -> Path:
    """The shipped dev set: Spider-format questions (English and Chinese) over the sample database."""
    return Path(__file__).parent / "data" / "dev.json"


def heldout_set_path() -> Path:
    """The held-out set: Spider-format questions (English and Chinese) over the clinic database
    (``HELDOUT_DB_ID``), kept out of all tuning so that its figures measure generalisation."""
    return Path(__file__).parent / "data" / "heldout.json"


__all__ = [
    "DIFFICULTIES",
    "GOLD_TIMEOUT_S",
    "HELDOUT_DB_ID",
    "RESERVED",
    "UNSEEN_DB_ID",
    "Attempt",
    "EvalReport",
    "Example",
    "ExampleStore",
    "GenerateOperator",
    "GroundOperator",
    "Grounding",
    "LinkOperator",
    "ParsedAnswer",
    "PipelineRunner",
    "Prediction",
    "Predictor",
    "PromptOperator",
    "Question",
    "RayEvalRunner",
    "Reuse",
    "SQLAnswer",
    "SQLTask",
    "SchemaLinker",
    "StoredExample",
    "Text2SQL",
    "Text2SQLEnv",
    "Text2SQLOptions",
    "ValueHit",
    "ValueIndex",
    "ValueIndexOptions",
    "ValueIndexes",
    "VoteOperator",
    "ablation_rows",
    "answer_grammar",
    "build_heldout_database",
    "chat_messages",
    "completion_prompt",
    "database_path",
    "dev_set_path",
    "difficulty_of",
    "ensure_heldout_database",
    "ensure_unseen_database",
    "evaluate",
    "extract_sql",
    "gold_orders",
    "grammar_dialects",
    "heldout_set_path",
    "load_questions",
    "mask_question",
    "parse_answer",
    "parse_answer_list",
    "ray_batches",
    "ray_workers",
    "read_examples",
    "repair_json",
    "results_match",
    "run_sqlite",
    "schema_examples",
    "sql_grammar",
    "step_event",
    "table_aliases",
    "transpile",
    "unseen_set_path",
    "write_chart",
]

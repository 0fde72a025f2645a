"""The text-to-SQL pipeline run over an evaluation set: one pipeline per database, each database's
value index read once and shared by every run (``datapilot eval text2sql`` and its ablation runs,
``datapilot train text2sql``'s before/after comparison)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datapilot.core.client import LLMClient
from datapilot.text2sql._eval import EvalReport, Prediction, Question, evaluate
from datapilot.text2sql._grounding import Grounding
from datapilot.text2sql._pipeline import Text2SQL, Text2SQLOptions
from datapilot.text2sql._values import ValueIndex

if TYPE_CHECKING:
    from datapilot.datasource import SQLAlchemyConnector
    from datapilot.text2sql._examples import ExampleStore


class PipelineRunner:
    """Runs the pipeline of one model over SQLite databases in Spider's layout; ``close`` when done."""

    def __init__(self, llm: LLMClient, model: str, *, examples: ExampleStore | None = None) -> None:
        self.llm, self.model, self.examples = llm, model, examples
        self._connectors: dict[Path, SQLAlchemyConnector] = {}
        self._indexes: dict[Path, ValueIndex] = {}

    async def _grounding(self, db_id: str, path: Path) -> Grounding:
        if path not in self._indexes:
            self._indexes[path] = await ValueIndex.build(self._connector(path))
        return Grounding(db_id, values=self._indexes[path], examples=self.examples)

    def _connector(self, path: Path) -> SQLAlchemyConnector:
        from datapilot.datasource import SQLAlchemyConnector

        if path not in self._connectors:
            self._connectors[path] = SQLAlchemyConnector(f"sqlite:///{path}")
        return self._connectors[path]

    async def run(
        self,
        questions: list[Question],
        db_dir: Path,
        options: Text2SQLOptions,
        *,
        progress: Callable[[Prediction], None] | None = None,
        timeout_s: float = 30.0,
    ) -> EvalReport:
        pipelines: dict[Path, Text2SQL] = {}  # one per database, for this run's options

        async def predict(q: Question, path: Path) -> tuple[str | None, int, str | None]:
            if path not in pipelines:
                grounding = await self._grounding(q.db_id, path)
                pipelines[path] = Text2SQL(
                    self.llm, self.model, self._connector(path), options=options, grounding=grounding
                )
            answer = await pipelines[path].answer(q.question)
            return answer.sql, len(answer.attempts), answer.error.message if answer.error else None

        return await evaluate(questions, db_dir, predict, progress, timeout_s)

    async def close(self) -> None:
        for c in self._connectors.values():
            await c.close()
        self._connectors.clear()

    async def __aenter__(self) -> PipelineRunner:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

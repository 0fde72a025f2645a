"""The fluent frame: a chainable API that builds the same DAG as ``>>``.

    Frame(HttpSource("/examples/run_code", method="post"), name="run_code")
        .text2vec(model="all-MiniLM-L6-v2").filter("embedded", k=3)
        .llm(model="gemma-3-270m", temperature=0.7).map(parse).write_to(sink)

Every method appends one node after the current one and returns a new ``Frame`` at that node, so a
frame can be forked; ``.dag`` is the graph, ``await frame.run(data)`` runs it up to the current node.
Every method takes the node options (``name``, ``on_error``, ``timeout``, ``executor``,
``ray_options``): ``.map(fn, executor="ray")`` runs that step as a Ray task, and
``Frame(..., executor="ray")`` makes Ray the flow's default for every step that can run there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from datapilot.awel._dag import DAG, BaseOperator
from datapilot.awel._library import (
    EmbeddingOperator,
    JSONOutputParser,
    LLMOperator,
    PromptTemplateOperator,
    RespondOperator,
    SQLOutputParser,
    StreamingLLMOperator,
    TextOutputParser,
    VectorRetrieveOperator,
)
from datapilot.awel._operators import (
    CollectStreamOperator,
    InputOperator,
    MapOperator,
    ReduceStreamOperator,
    StreamifyOperator,
    TransformStreamOperator,
)
from datapilot.awel._registry import OPERATORS
from datapilot.awel._remote import Executor


class Frame:
    def __init__(
        self,
        source: BaseOperator | None = None,
        *,
        name: str = "frame",
        dag: DAG | None = None,
        executor: Executor | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``executor``/``ray_options``: the flow's default executor (see ``DAG``)."""
        self.dag = dag or (source.dag if source is not None and source.dag is not None else DAG(name))
        if executor is not None or ray_options is not None:
            self.dag.set_executor(executor, ray_options)
        node = source if source is not None else InputOperator(dag=self.dag)
        if node.dag is None:
            self.dag.add(node)
        self.node = node

    @classmethod
    def _at(cls, dag: DAG, node: BaseOperator) -> Frame:
        frame = cls.__new__(cls)
        frame.dag, frame.node = dag, node
        return frame

    def then(self, op: BaseOperator) -> Frame:
        """Append any operator."""
        if op.dag is None:
            self.dag.add(op)
        self.dag.connect(self.node, op)
        return Frame._at(self.dag, op)

    # values -----------------------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any] | str, **kw: Any) -> Frame:
        return self.then(MapOperator(fn, dag=self.dag, **kw))

    def reduce(self, fn: Callable[[Any, Any], Any] | str, initial: Any = None, **kw: Any) -> Frame:
        """Fold a stream or a list with ``fn(acc, item)``."""
        if initial is not None:
            kw["initial"] = initial
        return self.then(ReduceStreamOperator(fn, dag=self.dag, **kw))

    def stream(self, fn: Callable[[Any], Any] | str | None = None, **kw: Any) -> Frame:
        return self.then(StreamifyOperator(fn, dag=self.dag, **kw))

    def transform(self, fn: Callable[[Any], Any] | str, **kw: Any) -> Frame:
        """Map a stream chunk by chunk."""
        return self.then(TransformStreamOperator(fn, dag=self.dag, **kw))

    def collect(self, separator: str | None = None, **kw: Any) -> Frame:
        return self.then(CollectStreamOperator(separator, dag=self.dag, **kw))

    # the stack ------------------------------------------------------------------------------------
    def prompt(self, template: str, system: str | None = None, **kw: Any) -> Frame:
        return self.then(PromptTemplateOperator(template, system, dag=self.dag, **kw))

    def text2vec(self, model: str, field: str | None = None, **kw: Any) -> Frame:
        return self.then(EmbeddingOperator(model, field, dag=self.dag, **kw))

    embed = text2vec

    def filter(self, store: str | None = None, k: int = 4, **kw: Any) -> Frame:
        """Keep the ``k`` documents of a vector store nearest to the embedded value."""
        return self.then(VectorRetrieveOperator(store, k, dag=self.dag, **kw))

    retrieve = filter

    def llm(self, model: str | None = None, temperature: float | None = None, **kw: Any) -> Frame:
        return self.then(LLMOperator(model, temperature, dag=self.dag, **kw))

    def stream_llm(self, model: str | None = None, temperature: float | None = None, **kw: Any) -> Frame:
        return self.then(StreamingLLMOperator(model, temperature, dag=self.dag, **kw))

    def sql(self, datasource: str, **kw: Any) -> Frame:
        """Run the SQL read-only on a data source (the ``sql`` operator the data sources register)."""
        return self.then(OPERATORS.get("sql")(datasource, dag=self.dag, **kw))

    def parse_text(self, **kw: Any) -> Frame:
        return self.then(TextOutputParser(dag=self.dag, **kw))

    def parse_json(self, **kw: Any) -> Frame:
        return self.then(JSONOutputParser(dag=self.dag, **kw))

    def parse_sql(self, **kw: Any) -> Frame:
        return self.then(SQLOutputParser(dag=self.dag, **kw))

    def write_to(self, sink: BaseOperator | Callable[[Any], Any] | list[Any], **kw: Any) -> Frame:
        """End the chain: answer the request of a trigger, call ``sink(value)``, or append to a list."""
        if isinstance(sink, BaseOperator):
            if not sink.is_source:
                raise TypeError("write_to(operator) answers a trigger; pass the frame's source")
            return self.then(RespondOperator(to=sink.name, dag=self.dag, **kw))
        kw.setdefault("executor", "local")  # the sink is this process's: a list, a callback
        if isinstance(sink, list):
            target = sink

            def append(value: Any) -> Any:
                target.append(value)
                return value

            return self.map(append, **kw)
        fn = sink

        def write(value: Any) -> Any:
            fn(value)
            return value

        return self.map(write, **kw)

    # running --------------------------------------------------------------------------------------
    def build(self) -> DAG:
        self.dag.validate()
        return self.dag

    async def run(self, data: Any = None) -> Any:
        return await self.dag.run(data, output=self.node)

    def __repr__(self) -> str:
        return f"<Frame {self.dag.name} at {self.node.name}>"

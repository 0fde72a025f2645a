"""AWEL, the workflow language: one graph of typed operators, built three ways.

* operators: ``with DAG("name"):`` then ``a >> b``, ``a >> [b, c]``, ``[b, c] >> d``;
* the fluent ``Frame``: ``Frame(HttpSource(...)).text2vec(...).filter(...).llm(...)``;
* the text DSL: ``CREATE WORKFLOW ... BEGIN ... END;`` compiled with ``compile_dsl``.

All three produce a ``DAG`` that runs asynchronously (``await dag.run(data)``), serialises to JSON
(``to_json``/``from_json``, names resolved only through the registries) and exports to Mermaid.
``DAGManager`` loads flows from a folder; the server mounts their ``HttpTrigger``s.

A node, or a whole flow, may run on Ray: ``executor="ray"`` (with ``ray_options``) on an operator,
``DAG(..., executor="ray")`` / ``Frame(..., executor="ray")`` for a flow, ``ON RAY`` in the DSL; the
process joins the cluster given to ``set_ray_address`` on first use.
"""

from datapilot.awel import _functions as _functions  # registers the built-in functions
from datapilot.awel._dag import DAG, BaseOperator, Requirement, current_dag
from datapilot.awel._dsl import compile_dsl, parse_workflow, to_dsl
from datapilot.awel._errors import (
    DAGError,
    DSLError,
    FlowInputError,
    FlowLoadError,
    FlowNotFoundError,
    NodeError,
    PortTypeError,
    RegistryError,
    SerializationError,
)
from datapilot.awel._frame import Frame
from datapilot.awel._library import (
    ChatHistoryLoadOperator,
    ChatHistoryStoreOperator,
    ChatOperator,
    ChatPromptOperator,
    ChatRequest,
    ChatRequestOperator,
    ChatState,
    Document,
    Embedded,
    EmbeddingOperator,
    JSONOutputParser,
    LLMOperator,
    PromptTemplateOperator,
    RespondOperator,
    Retrieved,
    SQLOutputParser,
    StreamingLLMOperator,
    TextOutputParser,
    VectorAddOperator,
    VectorRetrieveOperator,
    to_jsonable,
)
from datapilot.awel._manager import DAGManager, FlowInfo, read_flow_file
from datapilot.awel._operators import (
    BranchOperator,
    CollectStreamOperator,
    InputOperator,
    JoinOperator,
    MapOperator,
    MergeOperator,
    ReduceStreamOperator,
    StreamifyOperator,
    TransformStreamOperator,
    TriggerOperator,
)
from datapilot.awel._policy import ErrorPolicy, Fail, Fallback, Retry, Skip
from datapilot.awel._ports import is_assignable, type_name
from datapilot.awel._registry import (
    FUNCTIONS,
    OPERATORS,
    SCHEMAS,
    register_function,
    register_operator,
    register_schema,
)
from datapilot.awel._remote import set_ray_address
from datapilot.awel._resources import (
    DEFAULT_VECTOR_STORE,
    ChatHistory,
    FlowResources,
    IndexedVectorStore,
    InMemoryChatHistory,
    VectorStore,
)
from datapilot.awel._runner import SKIPPED, CallContext, Routed
from datapilot.awel._triggers import HttpSource, HttpTrigger, IteratorTrigger, run_batch
from datapilot.core.retrieval import Hit, VectorIndex

__all__ = [
    "DAG",
    "DEFAULT_VECTOR_STORE",
    "FUNCTIONS",
    "OPERATORS",
    "SCHEMAS",
    "SKIPPED",
    "BaseOperator",
    "BranchOperator",
    "CallContext",
    "ChatHistory",
    "ChatHistoryLoadOperator",
    "ChatHistoryStoreOperator",
    "ChatOperator",
    "ChatPromptOperator",
    "ChatRequest",
    "ChatRequestOperator",
    "ChatState",
    "CollectStreamOperator",
    "DAGError",
    "DAGManager",
    "DSLError",
    "Document",
    "Embedded",
    "EmbeddingOperator",
    "ErrorPolicy",
    "Fail",
    "Fallback",
    "FlowInfo",
    "FlowInputError",
    "FlowLoadError",
    "FlowNotFoundError",
    "FlowResources",
    "Frame",
    "Hit",
    "HttpSource",
    "HttpTrigger",
    "InMemoryChatHistory",
    "IndexedVectorStore",
    "InputOperator",
    "IteratorTrigger",
    "JSONOutputParser",
    "JoinOperator",
    "LLMOperator",
    "MapOperator",
    "MergeOperator",
    "NodeError",
    "PortTypeError",
    "PromptTemplateOperator",
    "ReduceStreamOperator",
    "RegistryError",
    "Requirement",
    "RespondOperator",
    "Retrieved",
    "Retry",
    "Routed",
    "SQLOutputParser",
    "SerializationError",
    "Skip",
    "StreamifyOperator",
    "StreamingLLMOperator",
    "TextOutputParser",
    "TransformStreamOperator",
    "TriggerOperator",
    "VectorAddOperator",
    "VectorIndex",
    "VectorRetrieveOperator",
    "VectorStore",
    "compile_dsl",
    "current_dag",
    "is_assignable",
    "parse_workflow",
    "read_flow_file",
    "register_function",
    "register_operator",
    "register_schema",
    "run_batch",
    "set_ray_address",
    "to_dsl",
    "to_jsonable",
    "type_name",
]

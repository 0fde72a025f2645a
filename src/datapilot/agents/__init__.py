"""Agents: data-driven teams that plan, use tools over resources, remember, and report.

* ``Agent`` with an ``AgentProfile`` (name, role, goal, constraints), a model through ``LLMClient``,
  tools and memory (``ShortTermMemory`` per step, ``LongTermMemory``: a vector store of past results).
* ``Tool`` / ``@tool``: plain typed functions with a pydantic JSON schema; offered as
  ``ModelRequest.tools`` when the model lists ``tools`` in its capabilities (or the client is a
  ``ToolCaller`` such as ``OpenAIToolsClient``), else called through the JSON action format
  (``parse_action``: tolerant, repaired, with bounded retries). A tool's exception is an observation,
  never a crash.
* Structured answers: when the model lists ``json_schema``, the planner asks under ``plan_schema`` and
  the reviewer under ``review_schema``; ``Team(structured=False)`` keeps the free-text path. Each
  plan, review and step record says whether it was structured and why a fallback was still needed.
* Resources: ``DataResource`` (schema, read-only SQL, text-to-SQL, charts), ``KnowledgeResource``
  (retrieval with citations), ``CodeResource`` (``CodeRunner``: a sandboxed Python process).
* ``Team`` / ``build_team``: planner -> steps (parallel where independent) -> reviewer, bounded by
  rounds and tokens; every record goes to a ``Trace`` (JSON, ``replay``, ``ReplayClient``).
* Registries (allow-lists): ``AGENTS`` (``AgentSpec``), ``TOOLS``; plugins from a folder or the
  ``datapilot.agents`` entry point group (``load_folder``, ``load_entry_points``).
"""

from datapilot.agents._actions import ACTION_FORMAT, Action, parse_action
from datapilot.agents._agent import (
    Agent,
    AgentProfile,
    Budget,
    ChartArtifact,
    RunContext,
    StepOutcome,
    TableArtifact,
    Task,
    ToolCall,
    ToolCaller,
    ToolReply,
    Workspace,
)
from datapilot.agents._builtin import (
    AGENTS,
    TOOLS,
    AgentSpec,
    AnalystAgent,
    ChartAgent,
    CoderAgent,
    Plan,
    PlannerAgent,
    ReporterAgent,
    ResearcherAgent,
    Review,
    ReviewerAgent,
    TeamResources,
    compose_report,
    default_plan,
    parse_plan,
    plan_schema,
    review_schema,
    runner_from,
)
from datapilot.agents._errors import ActionParseError, PluginError, UnknownAgentError, UnknownToolError
from datapilot.agents._memory import Embedder, LongTermMemory, MemoryHit, ShortTermMemory
from datapilot.agents._native import OpenAIToolsClient
from datapilot.agents._plugins import ENTRY_POINT_GROUP, PluginReport, load_entry_points, load_folder
from datapilot.agents._resources import ChartFn, CodeResource, DataResource, KnowledgeResource, RenderFn
from datapilot.agents._sandbox import CodeResult, CodeRunner, namespace_available
from datapilot.agents._team import RunResult, Team, build_team
from datapilot.agents._tools import Tool, ToolOutput, ToolResult, tool
from datapilot.agents._trace import ReplayClient, Trace, describe, request_key
from datapilot.core.registry import Registry

__all__ = [
    "ACTION_FORMAT",
    "AGENTS",
    "ENTRY_POINT_GROUP",
    "TOOLS",
    "Action",
    "ActionParseError",
    "Agent",
    "AgentProfile",
    "AgentSpec",
    "AnalystAgent",
    "Budget",
    "ChartAgent",
    "ChartArtifact",
    "ChartFn",
    "CodeResource",
    "CodeResult",
    "CodeRunner",
    "CoderAgent",
    "DataResource",
    "Embedder",
    "KnowledgeResource",
    "LongTermMemory",
    "MemoryHit",
    "OpenAIToolsClient",
    "Plan",
    "PlannerAgent",
    "PluginError",
    "PluginReport",
    "Registry",
    "RenderFn",
    "ReplayClient",
    "ReporterAgent",
    "ResearcherAgent",
    "Review",
    "ReviewerAgent",
    "RunContext",
    "RunResult",
    "ShortTermMemory",
    "StepOutcome",
    "TableArtifact",
    "Task",
    "Team",
    "TeamResources",
    "Tool",
    "ToolCall",
    "ToolCaller",
    "ToolOutput",
    "ToolReply",
    "ToolResult",
    "Trace",
    "UnknownAgentError",
    "UnknownToolError",
    "Workspace",
    "build_team",
    "compose_report",
    "default_plan",
    "describe",
    "load_entry_points",
    "load_folder",
    "namespace_available",
    "parse_action",
    "parse_plan",
    "plan_schema",
    "request_key",
    "review_schema",
    "runner_from",
    "tool",
]

"""Chat scenes composed from the modules, and the charts they draw.

* Scenes (``run_scene`` streams events, ``chat`` returns the final answer): ``data`` (question ->
  SQL -> table -> chart -> short answer), ``db_qa`` (schema questions), ``excel`` (a CSV / Excel /
  Parquet file in DuckDB, columns cleaned and described), ``dashboard`` (several analyses at once),
  ``agent`` (a team of agents: plan, SQL, charts, report; also the ``agent_team`` AWEL operator).
  More scenes plug in with ``register_scene``.
* Charts: ``choose_chart`` picks the type from the result's shape; ``vega_lite`` gives the spec the
  UI renders offline; ``render_chart`` draws PNG or SVG with matplotlib.
"""

from datapilot.apps._agent import AgentOperator, AgentRunRequest, agent_events, agent_team, data_resource
from datapilot.apps._charts import CHART_KINDS, ChartSpec, choose_chart, render_chart, vega_lite
from datapilot.apps._scenes import (
    ChatContext,
    Event,
    Scene,
    SceneRequest,
    chart_payload,
    chat,
    describe_columns,
    register_scene,
    run_scene,
    scene_names,
    split_questions,
    summary_of,
)

__all__ = [
    "CHART_KINDS",
    "AgentOperator",
    "AgentRunRequest",
    "ChartSpec",
    "ChatContext",
    "Event",
    "Scene",
    "SceneRequest",
    "agent_events",
    "agent_team",
    "chart_payload",
    "chat",
    "choose_chart",
    "data_resource",
    "describe_columns",
    "register_scene",
    "render_chart",
    "run_scene",
    "scene_names",
    "split_questions",
    "summary_of",
    "vega_lite",
]

"""Chat scenes composed from the modules, and the charts they draw.

* Scenes, each an AWEL flow run by ``SceneService`` (``run_scene`` streams events, ``chat`` returns
  the final answer): ``data`` (question -> SQL -> table -> chart -> short answer), ``db_qa`` (schema
  questions), ``excel`` (a CSV / Excel / Parquet file in DuckDB, columns cleaned and described),
  ``dashboard`` (several analyses at once), ``knowledge`` (an answer with citations), ``agent`` (a
  team of agents: plan, SQL, charts, report) and ``chat``. A flow copied and changed is served as a
  new scene with ``register_scene`` or ``SceneService.save``.
* Charts: ``choose_chart`` picks the type from the result's shape; ``vega_lite`` gives the spec the
  UI renders offline; ``render_chart`` draws PNG or SVG with matplotlib.
"""

from datapilot.apps._agent import (
    AgentOperator,
    AgentRunOperator,
    AgentRunRequest,
    agent_events,
    agent_team,
    data_resource,
)
from datapilot.apps._charts import CHART_KINDS, ChartSpec, choose_chart, render_chart, vega_lite
from datapilot.apps._flows import (
    BUILTIN_SCENES,
    SCENES,
    Scene,
    SceneService,
    chat,
    read_scene_file,
    register_scene,
    run_scene,
    scene_names,
    scene_service,
    scene_text,
)
from datapilot.apps._scenes import (
    ChatContext,
    SceneRequest,
    chart_payload,
    describe_columns,
    split_questions,
    summary_of,
)

__all__ = [
    "BUILTIN_SCENES",
    "CHART_KINDS",
    "SCENES",
    "AgentOperator",
    "AgentRunOperator",
    "AgentRunRequest",
    "ChartSpec",
    "ChatContext",
    "Scene",
    "SceneRequest",
    "SceneService",
    "agent_events",
    "agent_team",
    "chart_payload",
    "chat",
    "choose_chart",
    "data_resource",
    "describe_columns",
    "read_scene_file",
    "register_scene",
    "render_chart",
    "run_scene",
    "scene_names",
    "scene_service",
    "scene_text",
    "split_questions",
    "summary_of",
    "vega_lite",
]

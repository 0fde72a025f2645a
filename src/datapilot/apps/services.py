"""The service objects a DataPilot server holds, usable without it (the CLI, scripts, tests).

* ``DataService``: data sources, queries, value indexes, verified examples, the chat scenes' context.
* ``CacheService``: the semantic cache and, when serving integration is on, the cached model client.
* ``KnowledgeService``: knowledge spaces, document uploads, retrieval and the knowledge chat.
* ``AgentService``: agent and tool registries, long-term memory, team runs and their traces.

Each has ``start()`` and ``close()``; none imports the HTTP layer.
"""

from datapilot.apps._agent_service import AgentRun, AgentService
from datapilot.apps._cache_service import (
    BYPASS_HEADER,
    ENTRY_HEADER,
    TENANT_HEADER,
    CacheHeaders,
    CacheService,
    serving,
)
from datapilot.apps._data_service import FEEDBACK_MESSAGES, DataService, choose_chat_model
from datapilot.apps._knowledge_service import ChatQuestion, KnowledgeService, Upload

__all__ = [
    "BYPASS_HEADER",
    "ENTRY_HEADER",
    "FEEDBACK_MESSAGES",
    "TENANT_HEADER",
    "AgentRun",
    "AgentService",
    "CacheHeaders",
    "CacheService",
    "ChatQuestion",
    "DataService",
    "KnowledgeService",
    "Upload",
    "choose_chat_model",
    "serving",
]

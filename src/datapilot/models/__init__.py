"""SMMF: model backends, workers and the clients that reach them.

Public API: the ``ModelBackend`` seam and its registry, the in-process ``ModelManager`` and the
``RemoteLLMClient`` (both ``LLMClient`` implementations), and model-file resolution.
"""

from datapilot.models.assets import package_model_path, resolve_model_path
from datapilot.models.backend import (
    CHAT,
    COMPLETION,
    EMBEDDING,
    ModelBackend,
    backend_names,
    check_backend,
    get_backend,
    register_backend,
)
from datapilot.models.manager import ModelManager, ModelState, ModelWorker, RequestRecord
from datapilot.models.prompt import StopFilter, few_shot_dialogue
from datapilot.models.remote import RemoteLLMClient

__all__ = [
    "CHAT",
    "COMPLETION",
    "EMBEDDING",
    "ModelBackend",
    "ModelManager",
    "ModelState",
    "ModelWorker",
    "RemoteLLMClient",
    "RequestRecord",
    "StopFilter",
    "backend_names",
    "check_backend",
    "few_shot_dialogue",
    "get_backend",
    "package_model_path",
    "register_backend",
    "resolve_model_path",
]

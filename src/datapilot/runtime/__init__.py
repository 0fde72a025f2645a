"""The runtime layer: where work runs when one process or one machine is not enough.

``runtime = "local"`` keeps model instances in this server's processes (SMMF as processes). With
``runtime = "ray"`` they are Ray actors that Ray places on any node with the resources they declare
(``datapilot.models.cluster.ray_host``), and AWEL operators or whole flows may run as Ray tasks
(``executor = "ray"``). This package connects to Ray once per process and turns Ray's failures into
DataPilot's errors; Ray itself is optional (``pip install 'datapilot[ray]'``).
"""

from datapilot.runtime._ray import connect, connected, ray_module, unwrap_ray_error
from datapilot.runtime._tasks import NotShippableError, RemoteTaskError, run_task, task_error

__all__ = [
    "NotShippableError",
    "RemoteTaskError",
    "connect",
    "connected",
    "ray_module",
    "run_task",
    "task_error",
    "unwrap_ray_error",
]

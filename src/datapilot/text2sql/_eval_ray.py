"""``datapilot eval text2sql --ray``: the evaluation spread over Ray actors.

The questions go to Ray actors in small batches, each actor taking the next batch when it is done with
one (a slow share does not hold the others up). An actor loads the model itself (a ModelManager over the
same ModelConfig and home, in its own process) and evaluates a batch with the local path's
PipelineRunner, so the scoring is the same code; it streams each question's Prediction back as it is
scored (a Ray streaming generator), and the driver advances the progress bar per question and puts the
predictions back in the questions' order. The actors are kept for every run of an ablation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datapilot.core.errors import DataPilotError

if TYPE_CHECKING:
    from datapilot.core.config import CacheEmbedderConfig, ModelConfig, RaySettings
    from datapilot.models.manager import ModelManager
    from datapilot.text2sql._eval import EvalReport, Prediction, Question
    from datapilot.text2sql._examples import ExampleStore
    from datapilot.text2sql._pipeline import Text2SQLOptions
    from datapilot.text2sql._runner import PipelineRunner

RAY_BATCHES_PER_ACTOR = 4  # batches per actor when the set is small: enough to even out slow shares
RAY_MAX_BATCH = 8  # questions per batch at most


class EvalActor:
    """One Ray worker of a distributed evaluation (wrapped by ``ray.remote`` at run time): the model in
    its own ``ModelManager``, and a ``PipelineRunner`` kept across batches (its value indexes are read
    once per database)."""

    def __init__(
        self, config: ModelConfig, home: str, examples_url: str | None, embedder: CacheEmbedderConfig | None
    ) -> None:
        self.config, self.home = config, Path(home).expanduser()
        self.examples_url, self.embedder = examples_url, embedder
        self.manager: ModelManager | None = None
        self.runner: PipelineRunner | None = None
        self.store: ExampleStore | None = None

    async def load(self) -> dict[str, Any]:
        """Load the model (once); says where this actor runs."""
        import os

        from datapilot.models.manager import ModelManager, ModelState
        from datapilot.runtime import ray_module
        from datapilot.text2sql._examples import ExampleStore
        from datapilot.text2sql._runner import PipelineRunner

        if self.runner is None:
            manager = ModelManager([self.config], self.home)
            await manager.start()
            worker = manager.workers[self.config.name]
            if worker.state != ModelState.READY:
                await manager.close()
                raise DataPilotError(f"model {self.config.name!r} failed to load in a Ray actor: {worker.error}")
            if self.examples_url is not None:
                from datapilot.retrieval import EmbedderContext, make_embedder

                embedder = make_embedder(self.embedder, EmbedderContext(self.home)) if self.embedder else None
                self.store = ExampleStore(self.examples_url, embedder=embedder)
            self.manager = manager
            self.runner = PipelineRunner(manager, self.config.name, examples=self.store)
        ray = ray_module()
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    async def evaluate(
        self, questions: list[Question], db_dir: str, options: Text2SQLOptions, timeout_s: float
    ) -> AsyncIterator[Prediction]:
        """``PipelineRunner.run`` over ``questions``, each Prediction yielded as soon as it is scored."""
        if self.runner is None:
            raise DataPilotError("the evaluation actor has not loaded its model")
        scored: asyncio.Queue[Prediction | None] = asyncio.Queue()
        run = asyncio.ensure_future(
            self.runner.run(questions, Path(db_dir), options, progress=scored.put_nowait, timeout_s=timeout_s)
        )
        run.add_done_callback(lambda _: scored.put_nowait(None))
        try:
            while (prediction := await scored.get()) is not None:
                yield prediction
            run.result()  # the run's own error, if it failed
        finally:
            if not run.done():
                run.cancel()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        if self.manager is not None:
            await self.manager.close()
        if self.store is not None:
            self.store.close()


def ray_workers(cluster_cpus: float, config: ModelConfig, questions: int, asked: int | None = None) -> int:
    """Actors for an evaluation: as asked, else as many as the cluster's CPUs hold at the model's
    ``resources.num_cpus`` each; at least 1 and never more than there are questions."""
    if asked is None:
        per = config.resources.num_cpus
        asked = int(cluster_cpus // per) if per > 0 else int(cluster_cpus)
    return max(1, min(asked, questions))


def ray_batches(total: int, workers: int) -> list[range]:
    """The questions' positions in consecutive batches: about ``RAY_BATCHES_PER_ACTOR`` per actor, at
    most ``RAY_MAX_BATCH`` questions each (neighbouring questions, often of one database, stay together)."""
    size = max(1, min(RAY_MAX_BATCH, -(-total // (workers * RAY_BATCHES_PER_ACTOR))))
    return [range(i, min(i + size, total)) for i in range(0, total, size)]


class RayEvalRunner:
    """``PipelineRunner.run`` for a model on Ray actors: ``start`` places and loads them, ``run``
    evaluates (as often as needed, e.g. each run of an ablation), ``close`` removes them."""

    def __init__(
        self,
        config: ModelConfig,
        home: Path,
        ray: RaySettings,
        *,
        workers: int | None = None,
        examples_url: str | None = None,
        embedder: CacheEmbedderConfig | None = None,
    ) -> None:
        self.config, self.home, self.ray = config, home, ray
        self.asked = workers
        self.examples_url, self.embedder = examples_url, embedder
        self.actors: list[Any] = []
        self.placed: list[dict[str, Any]] = []
        self.cluster: dict[str, Any] = {}

    @property
    def what(self) -> str:
        return f"the evaluation of {self.config.name!r} on Ray"

    async def start(self, questions: int) -> None:
        from datapilot.runtime import connect, ray_module

        s = self.ray
        # In this thread, not a worker thread: Ray sets its signal handlers only from the main thread.
        self.cluster = connect(s.address, s.namespace, s.num_cpus)
        ray = ray_module()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        n = ray_workers(cpus, self.config, questions, self.asked)
        r = self.config.resources
        options: dict[str, Any] = {
            "num_cpus": r.num_cpus,
            "num_gpus": r.num_gpus,
            "max_restarts": 0,  # an actor that dies fails the evaluation: its share would be lost
            "max_task_retries": 0,
        }
        if r.memory_mb:
            options["memory"] = r.memory_mb * 1024 * 1024
        if r.custom:
            options["resources"] = dict(r.custom)
        if s.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        actor_class = ray.remote(EvalActor).options(**options)
        home = str(self.home.expanduser())
        self.actors = [actor_class.remote(self.config, home, self.examples_url, self.embedder) for _ in range(n)]
        loads = [self._call(a.load.remote()) for a in self.actors]
        try:
            self.placed = await asyncio.wait_for(asyncio.gather(*loads), s.load_timeout_s)
        except TimeoutError:
            raise DataPilotError(
                f"{n} Ray actor(s) for {self.config.name!r} were not placed and loaded within "
                f"{s.load_timeout_s:g} s: each needs {r.num_cpus:g} CPU(s)"
                + (f", {r.num_gpus:g} GPU(s)" if r.num_gpus else "")
                + f" (the cluster has {cpus:g} CPUs); ask for fewer with --ray-workers or lower resources.num_cpus"
            ) from None

    async def _call(self, ref: Any) -> Any:
        from datapilot.runtime import ray_module

        ray = ray_module()
        try:
            return await ref
        except ray.exceptions.RayError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> BaseException:
        from datapilot.runtime import ray_module, unwrap_ray_error

        errors = ray_module().exceptions
        if isinstance(exc, errors.RayActorError | errors.ActorUnavailableError | errors.WorkerCrashedError):
            return DataPilotError(
                f"a Ray actor of {self.what} died ({type(exc).__name__}): check the node's memory and the "
                "worker logs (`ray logs`), or give the model a memory reservation (resources.memory_mb)"
            )
        return unwrap_ray_error(exc, self.what)

    async def run(
        self,
        questions: list[Question],
        db_dir: Path,
        options: Text2SQLOptions,
        *,
        progress: Callable[[Prediction], None] | None = None,
        timeout_s: float = 30.0,
    ) -> EvalReport:
        """Evaluate ``questions`` on the actors: the same report as ``PipelineRunner.run`` (predictions in
        the questions' order), ``progress`` called once per question as its prediction arrives."""
        from datapilot.runtime import ray_module
        from datapilot.text2sql._eval import EvalReport

        if not self.actors:
            raise DataPilotError("the Ray evaluation has not started: call start() first")
        ray = ray_module()
        batches = deque(ray_batches(len(questions), len(self.actors)))
        scored: list[Prediction | None] = [None] * len(questions)
        folder = str(await asyncio.to_thread(db_dir.resolve))

        async def serve(actor: Any) -> None:
            while batches:
                batch = batches.popleft()
                stream = actor.evaluate.remote([questions[i] for i in batch], folder, options, timeout_s)
                at = iter(batch)
                try:
                    async for ref in stream:
                        prediction: Prediction = await ref
                        i = next(at)
                        prediction.question = questions[i]  # the caller's own object, as in a local run
                        scored[i] = prediction
                        if progress is not None:
                            progress(prediction)
                except ray.exceptions.RayError as exc:
                    raise self._error(exc) from exc

        tasks = [asyncio.ensure_future(serve(a)) for a in self.actors]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure, if any
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        missing = [questions[i].question for i, p in enumerate(scored) if p is None]
        if missing:
            raise DataPilotError(f"{len(missing)} question(s) came back from no Ray actor, e.g. {missing[0]!r}")
        return EvalReport([p for p in scored if p is not None])

    async def close(self) -> None:
        from datapilot.runtime import ray_module

        ray = ray_module()
        if self.actors:
            await asyncio.gather(*(self._close_one(a) for a in self.actors), return_exceptions=True)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []

    async def _close_one(self, actor: Any) -> None:
        await asyncio.wait_for(self._call(actor.close.remote()), 30)

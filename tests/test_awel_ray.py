"""AWEL on Ray: operators and whole flows run as Ray tasks, on one local Ray (2 CPUs) for the module.

The same flows run in-process and on Ray and must agree, in the three layers (``>>``, the frame, the
DSL); the work must really run in another process; errors keep their type and message; the error
policy, timeouts, events and cancellation keep working; operators that cannot leave the process say so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datapilot import runtime
from datapilot.awel import (
    DAG,
    BaseOperator,
    BranchOperator,
    CallContext,
    DAGError,
    DSLError,
    Frame,
    InputOperator,
    JoinOperator,
    LLMOperator,
    MapOperator,
    NodeError,
    Retry,
    StreamifyOperator,
    TransformStreamOperator,
    parse_workflow,
    register_function,
    set_ray_address,
    to_dsl,
)
from datapilot.core.errors import InvalidRequestError
from datapilot.testing import private_local_ray

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """One local Ray (2 CPUs) for the module (see ``private_local_ray``)."""
    with private_local_ray(num_cpus=2):
        yield


# Functions shipped to Ray: module level, so cloudpickle sends them by reference.


def double(x: int) -> int:
    return 2 * x


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def plus(a: int, b: int) -> int:
    return a + b


def pid_of(_: Any) -> int:
    return os.getpid()


async def slow_double(x: int) -> int:  # an async function runs to completion in the worker
    await asyncio.sleep(0.01)
    return 2 * x


class QuotaExceeded(Exception):
    """A user-defined error: must come back from Ray as itself."""


def over_quota(x: int) -> int:
    raise QuotaExceeded(f"quota exceeded for {x}")


def bad_value(x: int) -> int:
    raise ValueError(f"bad value {x}")


def bad_request(x: int) -> int:
    raise InvalidRequestError(f"no such column {x}")


def flaky(path: str) -> list[int]:
    """Fails on the first two calls (counted in a file, shared by the workers), then succeeds."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    pids = [int(line) for line in Path(path).read_text().split()]
    if len(pids) < 3:
        raise ConnectionError(f"attempt {len(pids)} failed")
    return pids


SLEEP = 4.0


def sleepy(folder: str) -> str:
    """Marks that it started, sleeps, marks that it finished (a cancelled task never finishes)."""
    Path(folder, "started").write_text(str(os.getpid()))
    time.sleep(SLEEP)
    Path(folder, "finished").write_text("done")
    return folder


def crash(_: Any) -> None:
    os._exit(1)


@register_function("raytest_double")
def reg_double(x: int) -> int:
    return 2 * x


@register_function("raytest_pid")
def reg_pid(_: Any) -> int:
    return os.getpid()


class Doubler(MapOperator):
    """A map defined by a subclass: the node itself is shipped, without its graph."""

    def __init__(self, factor: int = 2, **kw: Any) -> None:
        self.factor = factor
        super().__init__(**kw)

    def map(self, value: int) -> int:
        return self.factor * value


class Announce(BaseOperator):
    """Emits an event from this process (it needs the call context, so it can never run on Ray)."""

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        ctx.emit({"seen": inputs[0]})
        return inputs[0]


def diamond(name: str, *, executor: Any = None, node_executor: Any = None) -> DAG:
    """input -> double -> (inc, square) -> plus"""
    kw: dict[str, Any] = {"executor": node_executor} if node_executor else {}
    with DAG(name, executor=executor) as dag:
        start = InputOperator()
        d = MapOperator(double, **kw)
        j = JoinOperator(plus, **kw)
        start >> d >> [MapOperator(inc, **kw), MapOperator(square, **kw)] >> j
    return dag


# same results, another process --------------------------------------------------------------------


async def test_operators_give_the_same_results_on_ray() -> None:
    local = diamond("local")
    per_node = diamond("per_node", node_executor="ray")
    flow_wide = diamond("flow_wide", executor="ray")
    for x in (0, 3, 10):
        expected = await local.run(x)
        assert expected == (2 * x + 1) + (2 * x) ** 2
        assert await per_node.run(x) == expected
        assert await flow_wide.run(x) == expected


async def test_work_runs_in_another_process() -> None:
    with DAG("pids") as dag:
        start = InputOperator()
        here = MapOperator(pid_of, name="here")
        there = MapOperator(pid_of, name="there", executor="ray", ray_options={"num_cpus": 1})
        start >> [here, there]
    assert await dag.run(None, output="here") == os.getpid()
    assert await dag.run(None, output="there") != os.getpid()

    with DAG("pids_flow", executor="ray") as flow:
        InputOperator() >> MapOperator(pid_of)
    assert await flow.run(None) != os.getpid()


async def test_async_functions_and_subclass_maps_run_on_ray() -> None:
    with DAG("kinds", executor="ray") as dag:
        InputOperator() >> MapOperator(slow_double) >> Doubler(factor=5) >> MapOperator(inc)
    assert await dag.run(2) == 21


async def test_frame_on_ray() -> None:
    local = Frame(name="frame_local").map(double).map(inc)
    per_step = Frame(name="frame_step").map(double, executor="ray").map(inc, ray_options={"num_cpus": 1})
    flow_wide = Frame(name="frame_flow", executor="ray").map(double).map(inc)
    assert await local.run(4) == await per_step.run(4) == await flow_wide.run(4) == 9
    assert per_step.dag.node("double").executor == "ray"
    assert per_step.dag.node("inc").ray_options == {"num_cpus": 1}
    assert flow_wide.dag.executor == "ray"
    assert await Frame(name="frame_pid", executor="ray").map(pid_of).run(None) != os.getpid()


DSL = """
CREATE WORKFLOW shout{flow} AS
BEGIN
  DATA req = RECEIVE REQUEST FROM input();
  DATA doubled = TRANSFORM req USING map(fn = "raytest_double"){node};
  DATA pid = TRANSFORM doubled USING map(fn = "raytest_pid"){node};
END;
"""


async def test_dsl_on_ray() -> None:
    local = parse_workflow(DSL.format(flow="", node=""))
    per_node = parse_workflow(DSL.format(flow="", node=" ON RAY (num_cpus = 1)"))
    flow_wide = parse_workflow(DSL.format(flow=" ON RAY", node=""))
    assert await local.run(21, output="doubled") == await per_node.run(21, output="doubled") == 42
    assert await flow_wide.run(21, output="doubled") == 42
    assert await local.run(1) == os.getpid()
    assert await per_node.run(1) != os.getpid()
    assert await flow_wide.run(1) != os.getpid()
    assert per_node.node("pid").ray_options == {"num_cpus": 1}
    assert flow_wide.executor == "ray" and flow_wide.node("pid").executor is None

    # ON LOCAL keeps a node in-process under a flow-wide ON RAY.
    mixed = parse_workflow(DSL.format(flow=" ON RAY", node=" ON LOCAL"))
    assert await mixed.run(1) == os.getpid()


def test_dsl_and_json_keep_the_executor() -> None:
    with DAG("kept", executor="ray", ray_options={"num_cpus": 1}) as dag:
        (
            InputOperator(name="req")
            >> MapOperator("raytest_double", name="a", executor="ray", ray_options={"num_cpus": 0.5, "max_retries": 1})
            >> MapOperator("raytest_double", name="b", executor="local")
            >> MapOperator("raytest_double", name="c", executor="ray", on_error=Retry(2))
            >> MapOperator("raytest_double", name="d")
        )
    text = to_dsl(dag)
    assert "CREATE WORKFLOW kept ON RAY (num_cpus = 1) AS" in text
    assert 'USING map(fn = "raytest_double") ON RAY (num_cpus = 0.5, max_retries = 1);' in text
    assert "ON LOCAL;" in text and "ON RAY ON ERROR RETRY 2 TIMES;" in text
    again = parse_workflow(text)
    assert again == dag
    assert [again.node(n).executor for n in "abcd"] == ["ray", "local", "ray", None]
    assert again.node("a").ray_options == {"num_cpus": 0.5, "max_retries": 1}

    data = dag.to_dict()
    assert data["executor"] == "ray" and data["ray_options"] == {"num_cpus": 1}
    assert data["nodes"][1]["executor"] == "ray" and data["nodes"][1]["ray_options"]["max_retries"] == 1
    loaded = DAG.from_json(dag.to_json())
    assert loaded == dag and to_dsl(loaded) == text
    assert loaded.executor == "ray" and loaded.node("b").executor == "local"

    with DAG("plain") as plain:
        InputOperator() >> MapOperator("raytest_double")
    assert "executor" not in plain.to_json() and " ON " not in to_dsl(plain)  # nothing for the default


# errors ---------------------------------------------------------------------------------------------


def _failing(fn: Any, executor: Any) -> DAG:
    with DAG(f"failing_{fn.__name__}_{executor}") as dag:
        InputOperator() >> MapOperator(fn, name="step", executor=executor)
    return dag


@pytest.mark.parametrize("fn", [bad_value, over_quota, bad_request])
async def test_an_error_in_a_remote_operator_keeps_its_type_and_message(fn: Any) -> None:
    errors: dict[str, NodeError] = {}
    for executor in ("local", "ray"):
        with pytest.raises(NodeError) as info:
            await _failing(fn, executor).run(7)
        errors[executor] = info.value
    local, remote = errors["local"], errors["ray"]
    assert type(remote.cause) is type(local.cause)
    assert str(remote.cause) == str(local.cause) and "7" in str(remote.cause)
    assert remote.message.replace("_ray", "_local") == local.message
    assert remote.node == "step" and remote.status_code == local.status_code  # a 400 stays a 400


async def test_a_retry_policy_retries_a_remote_operator(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    with DAG("retried") as dag:
        InputOperator() >> MapOperator(flaky, executor="ray", on_error=Retry(3, backoff=0.01))
    pids = await dag.run(str(counter))
    assert len(pids) == 3 and os.getpid() not in pids

    counter.unlink()
    with DAG("spent") as spent:
        InputOperator() >> MapOperator(flaky, name="flaky", executor="ray", on_error=Retry(1, backoff=0.01))
    with pytest.raises(NodeError) as info:
        await spent.run(str(counter))
    assert isinstance(info.value.cause, ConnectionError) and "attempt 2 failed" in str(info.value.cause)


async def test_what_cannot_be_pickled_gets_a_clear_error() -> None:
    lock = threading.Lock()
    with DAG("unpicklable_input") as dag:
        InputOperator() >> MapOperator(double, name="double", executor="ray")
    with pytest.raises(NodeError) as info:
        await dag.run(lock)
    assert isinstance(info.value.cause, runtime.NotShippableError)
    message = info.value.message
    assert "node 'double' (map) cannot be sent to Ray" in message and "executor='local'" in message

    with DAG("unpicklable_fn") as dag2:
        InputOperator() >> MapOperator(lambda x: (lock, x), name="locked", executor="ray")
    with pytest.raises(NodeError, match=r"node 'locked' \(map\) cannot be sent to Ray.*module's top level"):
        await dag2.run(1)


async def test_a_crashed_worker_gets_a_clear_error() -> None:
    with DAG("crashing") as dag:
        InputOperator() >> MapOperator(crash, name="crash", ray_options={"max_retries": 0})
    with pytest.raises(NodeError) as info:
        await dag.run(1)
    assert isinstance(info.value.cause, runtime.RemoteTaskError)
    assert "the Ray worker running node 'crash' (map) died" in info.value.message
    assert info.value.status_code == 503


def test_asking_for_ray_on_an_operator_that_cannot_run_there_is_an_error() -> None:
    cases: list[tuple[Any, str]] = [
        (lambda: InputOperator(executor="ray"), "sources and triggers"),
        (lambda: LLMOperator("echo", executor="ray"), "live objects"),
        (lambda: StreamifyOperator(executor="ray"), "stream"),
        (lambda: TransformStreamOperator(inc, ray_options={"num_cpus": 1}), "stream"),
        (lambda: BranchOperator(choose=lambda v: None, executor="ray"), "a branch routes"),
    ]
    for make, why in cases:
        with pytest.raises(DAGError, match=f"cannot run on Ray: .*{why}") as info:
            with DAG("bad"):
                src = InputOperator(name="src")
                op = make()
                if not op.is_source:
                    src >> op
        assert len(info.value.problems) == 1, info.value.problems

    with pytest.raises(DSLError, match=r"line 5, column \d+: DATA answer cannot run ON RAY: its work uses"):
        parse_workflow(
            "CREATE WORKFLOW x AS\nBEGIN\n  DATA req = RECEIVE REQUEST FROM input();\n"
            '  DATA p = TRANSFORM req USING map(fn = "to_text");\n'
            '  DATA answer = APPLY LLM "echo" WITH DATA p ON RAY;\nEND;\n'
        )
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        MapOperator(inc, executor="gpu")
    with pytest.raises(ValueError, match="unknown Ray option 'cpus'"):
        MapOperator(inc, ray_options={"cpus": 1})
    with pytest.raises(ValueError, match="ray_options apply to executor='ray'"):
        MapOperator(inc, executor="local", ray_options={"num_cpus": 1})
    with pytest.raises(DSLError, match="Ray option num_cpus takes"):
        parse_workflow(DSL.format(flow="", node=' ON RAY (num_cpus = "two")'))


async def test_a_flow_wide_ray_default_leaves_local_only_operators_in_process() -> None:
    with DAG("mixed", executor="ray") as dag:
        InputOperator() >> MapOperator(double) >> Announce() >> MapOperator(pid_of)
    events = [e async for e in dag.run_events(5)]
    assert events == [{"seen": 10}]  # emitted from this process, after a remote step
    assert await dag.run(5) != os.getpid()


# timeouts and cancellation -------------------------------------------------------------------------


async def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)


async def test_timeouts_and_cancelled_flows_cancel_their_ray_tasks(tmp_path: Path) -> None:
    timed, cancelled = tmp_path / "timed", tmp_path / "cancelled"
    timed.mkdir()
    cancelled.mkdir()
    with DAG("timed") as dag:
        InputOperator() >> MapOperator(sleepy, name="sleepy", executor="ray", timeout=2.5)
    with DAG("cancelled") as flow:
        InputOperator() >> MapOperator(sleepy, executor="ray")

    call = asyncio.ensure_future(flow.run(str(cancelled)))
    await _wait_for(cancelled / "started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    with pytest.raises(NodeError, match=r"node 'sleepy' .* timed out after 2\.5 s"):
        await dag.run(str(timed))
    assert (timed / "started").exists()

    # Past the end of both sleeps, had they gone on: neither task may have finished.
    last_start = max((timed / "started").stat().st_mtime, (cancelled / "started").stat().st_mtime)
    await asyncio.sleep(max(0.0, last_start + SLEEP + 1.0 - time.time()))
    assert not (cancelled / "finished").exists()
    assert not (timed / "finished").exists()


# connecting ------------------------------------------------------------------------------------------


async def test_the_address_hook_is_used_to_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime, "connected", lambda: False)
    monkeypatch.setattr(runtime, "connect", lambda *a, **k: calls.append(a))
    set_ray_address("ray://head:10001", namespace="flows")
    try:
        assert await Frame(name="hooked").map(double, executor="ray").run(2) == 4
    finally:
        set_ray_address(None)
    assert calls == [("ray://head:10001", "flows")]


def test_in_process_flows_never_import_ray() -> None:
    code = (
        "import asyncio, sys\n"
        "from datapilot.awel import DAG, InputOperator, MapOperator, parse_workflow, to_dsl\n"
        "with DAG('d') as dag:\n"
        "    InputOperator() >> MapOperator('upper', executor='local')\n"
        "assert asyncio.run(dag.run('a')) == 'A'\n"
        "parse_workflow(to_dsl(dag))\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

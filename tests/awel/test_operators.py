"""The operator layer and the runner: composition, concurrency, isolation, policies, validation, ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from datapilot.awel import (
    DAG,
    BranchOperator,
    CollectStreamOperator,
    DAGError,
    Fallback,
    InputOperator,
    JoinOperator,
    MapOperator,
    MergeOperator,
    NodeError,
    PortTypeError,
    ReduceStreamOperator,
    Retry,
    Skip,
    StreamifyOperator,
    TransformStreamOperator,
)


async def test_chain_fan_out_fan_in_and_shift_operators() -> None:
    with DAG("shapes") as dag:
        start = InputOperator()
        double = MapOperator(lambda x: x * 2, name="double")
        inc = MapOperator(lambda x: x + 1, name="inc")
        neg = MapOperator(lambda x: -x, name="neg")
        total = JoinOperator(lambda a, b, c: (a, b, c), name="total")
        chained = start >> double
        assert chained is double  # >> returns its right operand
        assert (double >> [inc, neg]) == [inc, neg]
        [inc, neg] >> total
        total << MapOperator(lambda x: x * 100, name="hundred") << start
    assert await dag.run(5) == (11, -10, 500)
    assert [u.name for u in total.upstream] == ["inc", "neg", "hundred"]
    assert await inc.call(5) == 11  # runs only inc's ancestors


async def test_independent_branches_run_concurrently_and_each_node_once() -> None:
    calls: dict[str, int] = {}

    def tracked(name: str, delay: float) -> MapOperator:
        async def fn(x: int) -> int:
            calls[name] = calls.get(name, 0) + 1
            await asyncio.sleep(delay)
            return x + 1

        return MapOperator(fn, name=name)

    with DAG("concurrent") as dag:
        src = InputOperator()
        shared = tracked("shared", 0)
        branches = [tracked(f"b{i}", 0.3) for i in range(4)]
        src >> shared >> branches
        branches >> JoinOperator(lambda *xs: sum(xs))
    started = time.perf_counter()
    assert await dag.run(1) == 12
    elapsed = time.perf_counter() - started
    assert elapsed < 0.9, f"4 branches of 0.3 s took {elapsed:.2f} s: they ran one after another"
    assert calls == {"shared": 1, "b0": 1, "b1": 1, "b2": 1, "b3": 1}


async def test_concurrent_calls_are_isolated() -> None:
    with DAG("isolated") as dag:

        async def slow_square(x: int) -> int:
            await asyncio.sleep(0.01 * (x % 3))
            return x * x

        InputOperator() >> MapOperator(slow_square) >> [MapOperator(lambda x: x + 1), MapOperator(lambda x: -x)]
        dag.nodes["map"] >> JoinOperator(lambda a: a, name="pick")
    # a second end node exists: ask for one explicitly
    results = await asyncio.gather(*(dag.run(i, output="pick") for i in range(50)))
    assert results == [i * i + 1 for i in range(50)]


async def test_retry_with_backoff_then_success() -> None:
    attempts = []

    async def flaky(x: int) -> int:
        attempts.append(time.perf_counter())
        if len(attempts) < 3:
            raise ConnectionError("upstream hiccup")
        return x

    with DAG("retry") as dag:
        InputOperator() >> MapOperator(flaky, on_error=Retry(3, backoff=0.05))
    assert await dag.run(7) == 7
    assert len(attempts) == 3
    assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.04  # exponential backoff


async def test_retries_spent_fail_naming_the_node() -> None:
    def always(x: int) -> int:
        raise ValueError("bad input")

    with DAG("retry_fail") as dag:
        InputOperator() >> MapOperator(always, name="parse", on_error=Retry(2, backoff=0))
    with pytest.raises(NodeError) as info:
        await dag.run(1)
    assert info.value.node == "parse"
    assert "'parse'" in info.value.message and "ValueError: bad input" in info.value.message


async def test_fail_is_the_default_and_names_the_node() -> None:
    with DAG("fail") as dag:
        InputOperator() >> MapOperator(lambda x: 1 / x, name="divide")
    with pytest.raises(NodeError, match=r"node 'divide'.*ZeroDivisionError"):
        await dag.run(0)


async def test_fallback_value() -> None:
    with DAG("fallback") as dag:
        InputOperator() >> MapOperator(lambda x: 1 / x, on_error=Fallback(-1.0)) >> MapOperator(lambda x: x * 2)
    assert await dag.run(0) == -2.0
    assert await dag.run(4) == 0.5


async def test_skip_propagates_until_a_join(caplog: pytest.LogCaptureFixture) -> None:
    ran = []
    with DAG("skip") as dag:
        src = InputOperator()
        bad = MapOperator(lambda x: 1 / x, name="bad", on_error=Skip("division failed"))
        after = MapOperator(lambda x: ran.append(x) or x, name="after")
        good = MapOperator(lambda x: x + 1, name="good")
        src >> bad >> after
        src >> good
        [after, good] >> JoinOperator(lambda a, b: (a, b), name="join")
    assert await dag.run(0) == (None, 1)
    assert ran == []  # skipped, not run with None
    assert "division failed" in caplog.text
    assert await dag.run(2) == (0.5, 3)


async def test_timeout_per_node() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    with DAG("timeout") as dag:
        InputOperator() >> MapOperator(slow, name="slow", timeout=0.05)
    started = time.perf_counter()
    with pytest.raises(NodeError, match=r"'slow'.*timed out after 0.05 s"):
        await dag.run(1)
    assert time.perf_counter() - started < 2


async def test_branch_routes_and_skipping_stops_at_merge() -> None:
    seen: list[str] = []
    with DAG("branch") as dag:
        src = InputOperator()
        route = BranchOperator(choose=lambda x: "even" if x % 2 == 0 else "odd")
        even = MapOperator(lambda x: seen.append("even") or f"{x} is even", name="even")
        odd = MapOperator(lambda x: seen.append("odd") or f"{x} is odd", name="odd")
        odd_more = MapOperator(lambda s: s.upper(), name="odd_more")
        src >> route >> [even, odd]
        odd >> odd_more
        [even, odd_more] >> MergeOperator() >> MapOperator(lambda s: f"<{s}>")
    assert await dag.run(4) == "<4 is even>"
    assert seen == ["even"]
    assert await dag.run(3) == "<3 IS ODD>"


async def test_branch_with_predicates_can_take_several() -> None:
    with DAG("multi") as dag:
        src = InputOperator()
        b = BranchOperator({"small": lambda x: x < 10, "positive": lambda x: x > 0})
        small, positive = MapOperator(lambda x: "small", name="small"), MapOperator(lambda x: "pos", name="positive")
        src >> b >> [small, positive]
        [small, positive] >> JoinOperator(lambda a, c: [a, c])
    assert await dag.run(5) == ["small", "pos"]
    assert await dag.run(50) == [None, "pos"]
    assert await dag.run(-1) == ["small", None]


async def test_stream_operators() -> None:
    async def words(text: str) -> AsyncIterator[str]:
        for w in text.split():
            yield w

    with DAG("streams") as dag:
        src = InputOperator()
        (
            src
            >> StreamifyOperator(lambda s: s.split())
            >> TransformStreamOperator(str.upper)
            >> CollectStreamOperator(" ")
        )
    assert await dag.run("a b c") == "A B C"

    with DAG("reduce") as dag2:
        InputOperator() >> StreamifyOperator(lambda n: range(n)) >> ReduceStreamOperator(lambda a, b: a + b, 0)
    assert await dag2.run(5) == 10
    chunks = [c async for c in dag.run_stream("x y", output=dag.nodes["upper"])]
    assert chunks == ["X", "Y"]


def test_subclass_map_and_sync_wrapper() -> None:
    class AddOne(MapOperator):
        def map(self, value: int) -> int:
            return value + 1

    with DAG("sub") as dag:
        InputOperator() >> AddOne() >> AddOne()
    assert dag.run_sync(1) == 3
    assert list(dag.nodes) == ["input", "map", "map_2"]


# validation -----------------------------------------------------------------------------------------


def test_cycle_is_reported_with_its_nodes() -> None:
    with pytest.raises(DAGError) as info:
        with DAG("cyclic"):
            src = InputOperator()
            a, b, c = (JoinOperator(lambda *x: x, name=n) for n in "abc")
            src >> a >> b >> c >> a
    assert "cycle: a -> b -> c -> a" in info.value.message


def test_dangling_input_is_reported() -> None:
    with pytest.raises(DAGError, match=r"node 'orphan' \(map\) has no input"):
        with DAG("dangling"):
            InputOperator() >> MapOperator(lambda x: x)
            MapOperator(lambda x: x, name="orphan")


def test_join_arity_mismatch_names_the_join() -> None:
    with pytest.raises(DAGError) as info:
        with DAG("arity"):
            src = InputOperator()
            pair = JoinOperator(lambda a, b: a + b, name="pair")
            [src >> MapOperator(lambda x: x, name=f"m{i}") for i in range(3)] >> pair
    assert "'pair' (join) takes 2 input(s) but has 3 (m0, m1, m2)" in info.value.message


def test_a_map_takes_one_input() -> None:
    with DAG("two"), pytest.raises(DAGError, match=r"takes 1 input and already has one"):
        a, b = InputOperator(name="a"), InputOperator(name="b")
        m = MapOperator(lambda x: x, name="m")
        a >> m
        b >> m


def test_sources_take_no_input() -> None:
    with DAG("src"), pytest.raises(DAGError, match=r"is a source"):
        InputOperator(name="a") >> InputOperator(name="b")


def test_a_stream_cannot_feed_two_nodes() -> None:
    with pytest.raises(DAGError, match=r"produces a stream"):
        with DAG("tee"):
            s = InputOperator() >> StreamifyOperator()
            s >> [CollectStreamOperator(name="c1"), CollectStreamOperator(name="c2")]


def test_port_types_are_checked_when_the_edge_is_made() -> None:
    def to_text(x: int) -> str:
        return str(x)

    def needs_int(x: int) -> int:
        return x

    def needs_number(x: float) -> float:
        return x

    dag = DAG("ports")  # no `with`: the rejected edges leave dangling nodes behind
    src = InputOperator(dag=dag)
    text = src >> MapOperator(to_text, dag=dag)
    with pytest.raises(PortTypeError) as info:
        text >> MapOperator(needs_int, name="needs_int", dag=dag)
    assert "edge to_text -> needs_int: 'to_text' produces str but 'needs_int' takes int" in info.value.message
    number = (
        src >> MapOperator(needs_int, name="ok_int", dag=dag) >> MapOperator(needs_number, dag=dag)
    )  # int fits float
    assert number.name == "needs_number"
    with pytest.raises(PortTypeError, match=r"AsyncIterator"):
        src >> StreamifyOperator(name="stream", dag=dag) >> MapOperator(needs_int, name="plain", dag=dag)


def test_join_ports_are_checked_per_position() -> None:
    def combine(a: int, b: str) -> str:
        return f"{a}{b}"

    def make_int(x: object) -> int:
        return 1

    dag = DAG("jp")
    src = InputOperator(dag=dag)
    j = JoinOperator(combine, dag=dag)
    src >> MapOperator(make_int, name="first", dag=dag) >> j
    with pytest.raises(PortTypeError, match=r"'combine' input 2 takes str"):
        src >> MapOperator(make_int, name="second", dag=dag) >> j


def test_several_end_nodes_need_an_explicit_output() -> None:
    with DAG("two_ends") as dag:
        InputOperator() >> [MapOperator(lambda x: 1, name="x"), MapOperator(lambda x: 2, name="y")]
    with pytest.raises(DAGError, match=r"2 end nodes \(x, y\)"):
        dag.run_sync(0)
    assert dag.run_sync(0, output="y") == 2

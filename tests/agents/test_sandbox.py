"""The code runner: results come back; time and memory are limited; no writes outside its folder; no network."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from datapilot.agents import CodeRunner, namespace_available


@pytest.fixture
def listener() -> Iterator[int]:
    """A socket listening on 127.0.0.1 that the code will try to reach."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


async def test_results_and_files_come_back() -> None:
    result = await CodeRunner(timeout_s=20).run(
        "import csv, statistics\nrows = list(csv.DictReader(open('table.csv')))\n"
        "print(statistics.fmean(float(r['n']) for r in rows))\nopen('summary.txt', 'w').write('ok')\n",
        {"table.csv": "k,n\na,1\nb,3\n"},
    )
    assert result.ok and result.stdout.strip() == "2.0" and result.exit_code == 0
    assert result.files == {"summary.txt": 2} and result.outputs == {"summary.txt": "ok"}


async def test_time_and_memory_are_limited() -> None:
    slow = await CodeRunner(timeout_s=1).run("while True:\n    pass\n")
    assert not slow.ok and slow.limit == "time" and slow.elapsed_s < 5
    big = await CodeRunner(timeout_s=20, memory_mb=256).run("x = bytearray(600 * 1024 * 1024)\n")
    assert not big.ok and big.limit == "memory" and "MemoryError" in big.stderr
    loud = await CodeRunner(timeout_s=20, output_bytes=1024).run("print('x' * 100_000)\n")
    assert loud.ok and loud.limit == "output" and len(loud.stdout) < 1100


async def test_writes_outside_the_folder_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    runner = CodeRunner(timeout_s=20)
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import os\nos.remove({str(keep)!r})",
        f"import pathlib\npathlib.Path({str(tmp_path / 'd')!r}).mkdir()",
        "import subprocess\nsubprocess.run(['touch', '/tmp/escaped'])",
    ):
        result = await runner.run(code)
        assert not result.ok and "PermissionError: sandbox:" in result.stderr, code
    assert not target.exists() and keep.read_text() == "keep" and not (tmp_path / "d").exists()
    inside = await runner.run("import os\nos.mkdir('d')\nopen('d/x.txt', 'w').write('x')\nos.remove('d/x.txt')")
    assert inside.ok, inside.stderr


async def test_the_network_is_refused(listener: int) -> None:
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=3)\nprint('connected')"
    result = await CodeRunner(timeout_s=20).run(code)
    assert not result.ok and "connected" not in result.stdout and "network access is not allowed" in result.stderr
    lookup = await CodeRunner(timeout_s=20).run("import socket\nsocket.getaddrinfo('example.com', 80)")
    assert not lookup.ok


@pytest.mark.skipif(not namespace_available(), reason="user namespaces (unshare -rn) are not available here")
async def test_the_network_namespace_alone_stops_connections(listener: int) -> None:
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=3)\nprint('connected')"
    result = await CodeRunner(timeout_s=20, audit=False).run(code)
    assert result.network_isolated and not result.ok and "connected" not in result.stdout
    assert "OSError" in result.stderr  # Network is unreachable: the namespace has no usable interface

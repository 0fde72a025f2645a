"""kill -9 during inserts: the embedded store opens consistent, rows and vectors agree."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from datapilot.cache import HashEmbedder, Scope, SemanticCache, SyncSemanticCache

from .conftest import hash_settings

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from datapilot.cache import HashEmbedder, SemanticCache
    from datapilot.core.config import CacheSettings

    async def main():
        settings = CacheSettings.model_validate({"embedders": {"default": {"kind": "hash"}}})
        cache = SemanticCache(settings, Path(sys.argv[1]), embedders={"default": HashEmbedder()})
        await cache.open()
        i = 0
        while True:
            batch = [([{"role": "user", "content": f"crash question {i + j} token{i + j}"}], f"answer {i + j}")
                     for j in range(5)]
            await cache.insert_many("m", batch)
            i += 5
            print(i, flush=True)

    asyncio.run(main())
    """
)


def _open(home: Path) -> SyncSemanticCache:
    return SyncSemanticCache(SemanticCache(hash_settings(), home, embedders={"default": HashEmbedder()}))


def test_kill_9_during_inserts_leaves_a_consistent_store(tmp_path: Path) -> None:
    # A clean first session leaves a snapshot; the killed one must not be able to pass off a stale one.
    with _open(tmp_path) as cache:
        cache.insert("m", [{"role": "user", "content": "before the crash"}], "old")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    written = 0
    while written < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        written = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    assert written >= 200, "the writer did not get going"

    with _open(tmp_path) as cache:
        rows = cache.cache.store.count(Scope("m").key)
        assert rows >= written + 1  # every acknowledged batch survived
        assert rows % 5 == 1  # batches are all or nothing
        assert cache.cache.index.count(Scope("m").key) == rows  # rows and vectors agree
        for i in range(0, written, 37):
            result = cache.query("m", [{"role": "user", "content": f"crash question {i} token{i}"}])
            assert result.hit and result.answer == f"answer {i}"
        assert cache.query("m", [{"role": "user", "content": "before the crash"}]).answer == "old"

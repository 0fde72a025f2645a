"""The MiniLM embedder runs on ONNX Runtime by default (exported once from the same weights) and must
give the vectors torch gives; ``runtime = "torch"`` and bad values behave as documented."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from datapilot.core.errors import ConfigError
from datapilot.retrieval import SentenceTransformerEmbedder, weights_stamp

TEXTS = [
    "How do I learn Python?",
    "What is the capital of France?",
    "word " * 400,  # past the 256-token window: embedded in overlapping windows, then pooled
    "?",
]


def test_onnx_export_matches_torch_and_is_reused(tmp_path: Path) -> None:
    onnx = SentenceTransformerEmbedder(onnx_dir=tmp_path)
    onnx.load_sync()
    assert onnx.runtime == "onnx"
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1 and not list(tmp_path.glob("*.part"))
    torch = SentenceTransformerEmbedder(runtime="torch")
    torch.load_sync()
    assert torch.runtime == "torch"
    a, b = onnx.embed_sync(TEXTS), torch.embed_sync(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert np.abs(a - b).max() < 1e-4
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # A second embedder finds the export by the weights' hash instead of exporting again.
    mtime = exported[0].stat().st_mtime_ns
    again = SentenceTransformerEmbedder(onnx_dir=tmp_path)
    again.load_sync()
    assert again.runtime == "onnx" and exported[0].stat().st_mtime_ns == mtime


def test_a_bulk_embeds_on_all_cores_and_gives_the_same_vectors(tmp_path: Path) -> None:
    embedder = SentenceTransformerEmbedder(onnx_dir=tmp_path)
    texts = [f"{i}: {TEXTS[i % 3]}" for i in range(200)]  # a bulk: its batches run side by side
    bulk = embedder.embed_sync(texts)
    assert embedder.runtime == "onnx" and embedder._bulk is not None
    few = np.vstack([embedder.embed_sync(texts[i : i + 8]) for i in range(0, 200, 8)])  # one batch each: one session
    assert bulk.shape == (200, 384) and np.abs(bulk - few).max() < 1e-5


def test_the_export_is_named_by_the_weights_not_by_file_times(tmp_path: Path) -> None:
    """Two installs of the same model (a new virtualenv, a clean clone) share one export."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "config.json").write_text('{"hidden_size": 4}')
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * (40 << 10))  # 10 MiB: read at both ends
    os.utime(second / "model.safetensors", (1, 1))
    assert weights_stamp(first) == weights_stamp(second)
    with (second / "model.safetensors").open("r+b") as f:  # another checkpoint: its last bytes differ
        f.seek(-1, os.SEEK_END)
        f.write(b"x")
    assert weights_stamp(first) != weights_stamp(second)
    (second / "model.safetensors").write_bytes(bytes(range(256)) * (40 << 10))
    (second / "config.json").write_text('{"hidden_size": 8}')
    assert weights_stamp(first) != weights_stamp(second)


def test_an_unknown_runtime_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="auto, onnx or torch"):
        SentenceTransformerEmbedder(runtime="tensorrt")

